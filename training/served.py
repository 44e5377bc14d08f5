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

An adapter is found on the server by its folder (the ``root`` vLLM lists for each LoRA
module); one that is not served is loaded at run time when the server allows it
(``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``), else the error names the flag to add.
The folder must be readable by the server under the same path.
"""

from pathlib import Path

import numpy as np

from annotation_db.student_task import ANSWER_PREFIX
from generation.backends import public_url
from generation.engine import vllm_lora_rank
from generation.models import ModelSpecError
from training.scoring import Continuation, label_token_ids, two_way

CHUNK = 64  # prompts per request; the server batches them itself


def adapter_name(adapter_path: str | Path) -> str:
    """The name an adapter is served under: its run folder's name (``sft-label-…``)."""
    path = Path(adapter_path)
    return (path.parent if path.name == "adapter" else path).name


def serve_command(base_model: str, adapters: list[str | Path], lora_rank: int) -> list[str]:
    """``vllm serve`` arguments that serve ``base_model`` with ``adapters`` (argv form)."""
    argv = ["vllm", "serve", base_model, "--enable-lora",
            "--max-lora-rank", str(vllm_lora_rank(lora_rank)),
            "--max-loras", str(max(1, min(len(adapters), 8)))]
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

    def load_adapter(self, name: str, path: str) -> bool:
        """Ask the server to load an adapter now; False where it does not allow that."""
        import httpx

        try:
            response = self.http.post(f"{self.url}/load_lora_adapter",
                                      json={"lora_name": name, "lora_path": path})
        except httpx.HTTPError:
            return False
        return response.status_code < 400


def _same_path(a: str | None, b: str | Path) -> bool:
    if not a:
        return False
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def served_name(client: ServerClient, base_path: str, base_spec: str,
                adapter_path: str | None) -> str:
    """The model name to send for the base model (``adapter_path`` None) or an adapter."""
    cards = client.models()
    if adapter_path is None:
        bases = [c for c in cards if not c.get("parent")]
        matching = [c for c in bases if _same_path(c.get("root"), base_path)
                    or c.get("root") == base_spec or c["id"] == base_spec]
        chosen = matching or (bases if len(bases) == 1 else [])
        if not chosen:
            raise ModelSpecError(
                f"the server at {public_url(client.url)} serves "
                f"{', '.join(c['id'] for c in bases) or 'no base model'}; none is the run's "
                f"base model {base_spec}")
        return chosen[0]["id"]
    for card in cards:
        if card.get("parent") and _same_path(card.get("root"), adapter_path):
            return card["id"]
    name = adapter_name(adapter_path)
    if client.load_adapter(name, str(Path(adapter_path).resolve())):
        return name
    raise ModelSpecError(
        f"the server at {public_url(client.url)} does not serve the adapter in "
        f"{adapter_path} and did not load it (runtime loading needs "
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True); start it with --enable-lora --lora-modules "
        f"{name}={Path(adapter_path).resolve()} (`rationale-audit evaluate serve-command` "
        "prints the whole line)")


class ServerScorer:
    """A :class:`training.scoring.Scorer` that sends token ids to a served model."""

    def __init__(self, client: ServerClient, model: str, tokenizer):
        self.client = client
        self.model = model
        self.tokenizer = tokenizer
        self.yes_id, self.no_id = label_token_ids(tokenizer)

    def _ids(self, prompts: list[str]) -> list[list[int]]:
        return [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]

    def _choices(self, prompts: list[str], n: int = 1, **body) -> list[list[dict]]:
        """The server's choices for each prompt, in prompt order."""
        grouped: list[list[dict]] = []
        ids = self._ids(prompts)
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
                               stop=[ANSWER_PREFIX], return_token_ids=True)
        return [self._continuation(choice) for (choice,) in groups]

    def sample_until_answer(self, prompts: list[str], max_tokens: int, n: int,
                            temperature: float, seed: int) -> list[list[Continuation]]:
        groups = self._choices(prompts, n=n, max_tokens=max_tokens, temperature=temperature,
                               top_p=1.0, top_k=0, seed=seed, stop=[ANSWER_PREFIX],
                               return_token_ids=True)
        return [[self._continuation(c) for c in group] for group in groups]
