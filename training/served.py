"""Scoring through a served base model and its LoRA adapters (``vllm serve --enable-lora``).

A team with a GPU node serves the base model once and lets every run's adapter ride on
it, instead of starting an engine (or merging weights) per run:

    vllm serve BASE --enable-lora --max-lora-rank 16 \\
        --lora-modules sft-label-1a2b3c4d5e6f=runs/sft-label-1a2b3c4d5e6f/adapter
    rationale-audit evaluate run 3 --server-url http://127.0.0.1:8000/v1

:class:`ServerScorer` keeps the :class:`training.scoring.Scorer` contract over HTTP:
P(yes) is read from the two label tokens' log-probabilities at the next position
(``logprob_token_ids``, vLLM's extension of the completions API), prompts travel as
token ids tokenized here, so the server sees exactly what a local engine would.

An adapter is served under its run folder's name and a hash of its weights
(:func:`adapter_name`); one that is not served is loaded at run time when the server
allows it (``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``), else the error names the flag to
add. The server must serve the run's own base model, and the adapter on it. The folder
must be readable by the server under the same path.
"""

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from annotation_db.student_task import ANSWER_PREFIX
from generation.backends import public_url
from generation.engine import vllm_lora_rank
from generation.models import ModelSpecError
from training.scoring import Continuation, label_token_ids, one_seed_each, two_way

CHUNK = 64  # prompts per request; the server batches them itself
IN_FLIGHT = 16  # sampled prompts travel one per request (each its own seed), this many at once
# Every sampling setting the local engine leaves at its neutral value, sent explicitly:
# a server fills what a request omits from the model's generation_config.json.
NEUTRAL = {"top_p": 1.0, "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0,
           "presence_penalty": 0.0, "frequency_penalty": 0.0}


def adapter_name(adapter_path: str | Path) -> str:
    """The name an adapter is served under: its run folder's name and the first 8 hex
    digits of its weights' sha256 (``sft-label-…-1a2b3c4d``), so a retrained adapter in
    the same folder is never scored with the weights a server loaded before."""
    import hashlib

    path = Path(adapter_path)
    weights = sorted(path.glob("adapter_model.*"))
    digest = hashlib.sha256()
    for file in weights:
        digest.update(file.read_bytes())
    run = (path.parent if path.name == "adapter" else path).name
    return f"{run}-{digest.hexdigest()[:8]}" if weights else run


def serve_command(base_model: str, adapters: list[str | Path], lora_rank: int) -> list[str]:
    """``vllm serve`` arguments that serve ``base_model`` with ``adapters`` (argv form).

    ``--generation-config vllm``: the server's defaults are vLLM's, not the model's
    ``generation_config.json`` (the scorer sends every sampling setting anyway)."""
    argv = ["vllm", "serve", base_model, "--enable-lora",
            "--max-lora-rank", str(vllm_lora_rank(lora_rank)),
            "--max-loras", str(max(1, min(len(adapters), 8))), "--generation-config", "vllm"]
    if adapters:
        argv.append("--lora-modules")
        argv += [f"{adapter_name(p)}={Path(p).resolve()}" for p in adapters]
    return argv


class ServerClient:
    """The few calls this module makes to an OpenAI-compatible server."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 600.0):
        import httpx

        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(headers=headers, timeout=timeout)

    def _post(self, path: str, body: dict) -> dict:
        import httpx

        try:
            response = self.http.post(f"{self.url}{path}", json=body)
        except httpx.HTTPError as exc:
            raise ConnectionError(f"cannot reach {public_url(self.url)}{path} "
                                  f"({type(exc).__name__})") from None
        if response.status_code >= 400:
            raise ConnectionError(f"{public_url(self.url)}{path} answered HTTP "
                                  f"{response.status_code}: {response.text[:300]}")
        return response.json() if response.content else {}

    def models(self) -> list[dict]:
        import httpx

        try:
            response = self.http.get(f"{self.url}/models", timeout=10)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise ConnectionError(f"cannot list models at {public_url(self.url)}/models "
                                  f"({type(exc).__name__})") from None
        return response.json()["data"]

    def completions(self, body: dict) -> dict:
        return self._post("/completions", body)

    def load_adapter(self, name: str, path: str) -> str | None:
        """Ask the server to load an adapter now; None if it did, else the reason."""
        import httpx

        try:
            response = self.http.post(f"{self.url}/load_lora_adapter",
                                      json={"lora_name": name, "lora_path": path})
        except httpx.HTTPError as exc:
            return type(exc).__name__
        if response.status_code < 400:
            return None
        return f"HTTP {response.status_code}: {response.text[:300]}"


def _same_path(a: str | None, b: str | Path) -> bool:
    if not a:
        return False
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _base_card(cards: list[dict], base_path: str, base_spec: str) -> dict | None:
    return next((c for c in cards if not c.get("parent") and (
        _same_path(c.get("root"), base_path) or c.get("root") == base_spec
        or c["id"] == base_spec)), None)


def served_name(client: ServerClient, base_path: str, base_spec: str,
                adapter_path: str | None) -> str:
    """The model name to send for the base model (``adapter_path`` None) or an adapter.

    The server must serve the run's own base model (by folder or spec), and an adapter
    only on top of it; a score on another base is refused, never stored."""
    cards = client.models()
    base = _base_card(cards, base_path, base_spec)
    if base is None:
        bases = ", ".join(c["id"] for c in cards if not c.get("parent")) or "no base model"
        raise ModelSpecError(f"the server at {public_url(client.url)} serves {bases}; none is "
                             f"the run's base model {base_spec} ({base_path})")
    if adapter_path is None:
        return base["id"]
    name = adapter_name(adapter_path)
    card = next((c for c in cards if c["id"] == name), None)
    if card is None:
        reason = client.load_adapter(name, str(Path(adapter_path).resolve()))
        if reason is not None:
            raise ModelSpecError(
                f"the server at {public_url(client.url)} does not serve the adapter in "
                f"{adapter_path} and did not load it ({reason}; runtime loading needs "
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True); start it with --enable-lora "
                f"--lora-modules {name}={Path(adapter_path).resolve()} "
                "(`rationale-audit evaluate serve-command` prints the whole line)")
        card = next((c for c in client.models() if c["id"] == name), {"parent": base["id"]})
    if card.get("parent") != base["id"]:
        raise ModelSpecError(f"the server serves adapter {name} on {card.get('parent')}, not "
                             f"on the run's base model {base['id']}")
    return name


class ServerScorer:
    """A :class:`training.scoring.Scorer` that sends token ids to a served model."""

    def __init__(self, client: ServerClient, model: str, tokenizer):
        self.client = client
        self.model = model
        self.tokenizer = tokenizer
        self.yes_id, self.no_id = label_token_ids(tokenizer)

    def _ids(self, prompts: list[str]) -> list[list[int]]:
        return [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]

    def _choices(self, prompts: list[str], n: int = 1, ids: list[list[int]] | None = None,
                 **body) -> list[list[dict]]:
        """The server's choices for each prompt (given as ``ids`` when tokenized
        already), in prompt order."""
        grouped: list[list[dict]] = []
        ids = ids if ids is not None else self._ids(prompts)
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            answer = self.client.completions({"model": self.model, "prompt": chunk, "n": n,
                                              **body})
            choices = sorted(answer["choices"], key=lambda c: c["index"])
            if len(choices) != len(chunk) * n:
                raise ConnectionError(f"the server answered {len(choices)} choices for "
                                      f"{len(chunk) * n} requested")
            grouped += [choices[i * n:(i + 1) * n] for i in range(len(chunk))]
        return grouped

    def label_probabilities(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        groups = self._choices(prompts, max_tokens=1, temperature=0.0, logprobs=2,
                               logprob_token_ids=[self.yes_id, self.no_id],
                               return_tokens_as_token_ids=True)
        p_yes, mass = [], []
        for (choice,) in groups:
            position = choice["logprobs"]["top_logprobs"][0]
            p, m = two_way(position[f"token_id:{self.yes_id}"],
                           position[f"token_id:{self.no_id}"])
            p_yes.append(p)
            mass.append(m)
        return np.asarray(p_yes), np.asarray(mass)

    @staticmethod
    def _continuation(choice: dict) -> Continuation:
        return Continuation(choice["text"], choice.get("stop_reason") == ANSWER_PREFIX,
                            len(choice.get("token_ids") or []))

    def continue_until_answer(self, prompts: list[str], max_tokens: int) -> list[Continuation]:
        groups = self._choices(prompts, max_tokens=max_tokens, temperature=0.0,
                               stop=[ANSWER_PREFIX], return_token_ids=True, **NEUTRAL)
        return [self._continuation(choice) for (choice,) in groups]

    def sample_until_answer(self, prompts: list[str], max_tokens: int, n: int,
                            temperature: float, seeds: Sequence[int]
                            ) -> list[list[Continuation]]:
        # A request has one seed, and the server gives sample j of each of its prompts the
        # same stream; so each prompt goes alone, with its own seed, and several at once
        # keep the server's batch full.
        seeds = one_seed_each(seeds, prompts)

        def one(ids: list[int], seed: int) -> list[Continuation]:
            (group,) = self._choices([], n=n, ids=[ids], max_tokens=max_tokens,
                                     temperature=temperature, seed=seed,
                                     stop=[ANSWER_PREFIX], return_token_ids=True, **NEUTRAL)
            return [self._continuation(c) for c in group]

        tokenized = self._ids(prompts)  # here: a fast tokenizer is not for several threads
        with ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
            return list(pool.map(one, tokenized, seeds))
