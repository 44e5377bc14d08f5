"""Three ways to run the same chats: vLLM offline (default), an OpenAI-compatible server,
and transformers ``generate`` (the reference baseline). They share prompts, the JSON schema
and parsing; only the call differs.

    backend = make_backend("vllm", resolved_model)
    completions = backend.complete([ChatRequest(messages, schema, seed=1)], params)
"""

import asyncio
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from annotation_db.render import tokenizer_counter
from generation.chat import Backend, ChatRequest, Completion, SamplingConfig, TokenLogprobs
from generation.engine import EngineOptions, load_vllm
from generation.models import ModelSpecError, ResolvedModel
from generation.output_budget import Counter, estimated_tokens


class VLLMBackend:
    """Offline batched generation with ``vllm.LLM.chat`` and per-request JSON schemas."""

    name = "vllm"

    def __init__(self, model: ResolvedModel, options: EngineOptions | None = None,
                 llm: Any = None):
        self.llm = llm if llm is not None else load_vllm(model, options)

    def complete(self, requests: list[ChatRequest], params: SamplingConfig) -> list[Completion]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        sampling = [
            SamplingParams(
                max_tokens=params.max_tokens, temperature=r.temperature, top_p=params.top_p,
                repetition_penalty=params.repetition_penalty, seed=r.seed,
                structured_outputs=(StructuredOutputsParams(json=r.schema)
                                    if r.schema is not None else None),
                logprobs=r.logprobs or None,
            )
            for r in requests
        ]
        outputs = self.llm.chat([r.messages for r in requests], sampling, use_tqdm=False)
        return [Completion(o.outputs[0].text, len(o.outputs[0].token_ids),
                           o.outputs[0].finish_reason, _vllm_logprobs(o.outputs[0]))
                for o in outputs]


def _vllm_logprobs(output) -> list[TokenLogprobs] | None:
    """vLLM's per-position {token id: Logprob}; the sampled token is always among them."""
    if not output.logprobs:
        return None
    out = []
    for token_id, position in zip(output.token_ids, output.logprobs, strict=False):
        chosen = position.get(token_id)
        out.append(TokenLogprobs(
            token=(chosen.decoded_token if chosen is not None else "") or "",
            top={lp.decoded_token or "": lp.logprob for lp in position.values()}))
    return out


def _server_logprobs(choice: dict) -> list[TokenLogprobs] | None:
    content = (choice.get("logprobs") or {}).get("content")
    if not content:
        return None
    return [TokenLogprobs(token=t["token"],
                          top={a["token"]: a["logprob"] for a in t.get("top_logprobs") or []}
                          | {t["token"]: t["logprob"]})
            for t in content]


@dataclass(frozen=True)
class ServedModel:
    """What an OpenAI-compatible server serves under one name, as ``/v1/models`` says."""

    url: str  # without credentials
    id: str
    root: str | None = None
    max_model_len: int | None = None

    def as_dict(self) -> dict:
        return {"url": self.url, "id": self.id, "root": self.root,
                "max_model_len": self.max_model_len}


def public_url(url: str) -> str:
    """``url`` without user, password or query (what may be stored and printed)."""
    parts = urlsplit(url.rstrip("/"))
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _headers(api_key: str | None) -> dict:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def served_model(url: str, name: str | None = None, api_key: str | None = None) -> ServedModel:
    """The model a server serves under ``name`` (default: its only one)."""
    import httpx

    base = url.rstrip("/")
    try:
        response = httpx.get(f"{base}/models", headers=_headers(api_key), timeout=10)
        response.raise_for_status()
        cards = response.json()["data"]
    except httpx.HTTPStatusError as exc:
        status = exc.response.status_code
        hint = "; give its key with --api-key or OPENAI_API_KEY" if status == 401 else ""
        raise ConnectionError(f"{public_url(base)}/models answered HTTP {status} "
                              f"{exc.response.reason_phrase}{hint}") from None
    except Exception as exc:
        raise ConnectionError(f"cannot list models at {public_url(base)}/models "
                              f"({type(exc).__name__})") from None
    ids = [card["id"] for card in cards]
    if name is None and len(cards) != 1:
        raise ModelSpecError(f"the server at {public_url(base)} serves {len(cards)} models "
                         f"({', '.join(ids) or 'none'}); name one with --model")
    card = cards[0] if name is None else next((c for c in cards if c["id"] == name), None)
    if card is None:
        raise ModelSpecError(f"the server at {public_url(base)} does not serve {name!r}; it serves "
                         f"{', '.join(ids)}")
    return ServedModel(public_url(base), card["id"], card.get("root"), card.get("max_model_len"))


class ServerBackend:
    """Any OpenAI-compatible server (e.g. vLLM's), with bounded concurrent async requests.

    ``model`` is the name the server serves (default: its only model); ``api_key`` is sent
    as a bearer token and never stored. Structured output goes through ``response_format``
    json_schema (vLLM ignores the old ``guided_json`` field silently).
    """

    name = "server"

    def __init__(self, url: str, model: str | None = None, concurrency: int = 8,
                 timeout: float = 600.0, api_key: str | None = None):
        self.url = url.rstrip("/")
        self.concurrency = concurrency
        self.timeout = timeout
        self.api_key = api_key
        self.served = served_model(self.url, model, api_key)
        self.model = self.served.id

    def token_counter(self) -> tuple[Counter, str]:
        """How the served model counts tokens, and which way was used: a local copy of its
        tokenizer (its root is a model folder here), else the server's ``/tokenize``
        endpoint (vLLM's), else an estimate (:data:`ESTIMATED_CHARS_PER_TOKEN`)."""
        import httpx

        root = self.served.root
        if root and Path(root, "tokenizer_config.json").is_file():
            from generation.models import load_tokenizer

            return tokenizer_counter(load_tokenizer(root)), f"local copy of {self.model}"
        client = httpx.Client(base_url=self.url.removesuffix("/v1"),
                              headers=_headers(self.api_key), timeout=30)

        @functools.lru_cache(maxsize=4096)
        def count(text: str) -> int:
            response = client.post("/tokenize", json={"model": self.model, "prompt": text,
                                                      "add_special_tokens": False})
            response.raise_for_status()
            return int(response.json()["count"])

        try:
            count("E1")
        except Exception:
            client.close()
            return estimated_tokens, "estimate"
        return count, f"{self.served.url.removesuffix('/v1')}/tokenize"

    def complete(self, requests: list[ChatRequest], params: SamplingConfig) -> list[Completion]:
        return asyncio.run(self._complete(requests, params))

    async def _complete(self, requests, params) -> list[Completion]:
        import httpx

        gate = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout,
                                     headers=_headers(self.api_key)) as client:

            async def one(request: ChatRequest) -> Completion:
                body = {
                    "model": self.model, "messages": request.messages,
                    "max_tokens": params.max_tokens, "temperature": request.temperature,
                    "top_p": params.top_p, "seed": request.seed,
                    "repetition_penalty": params.repetition_penalty,
                }
                if request.logprobs:
                    body.update(logprobs=True, top_logprobs=request.logprobs)
                if request.schema is not None:
                    body["response_format"] = {
                        "type": "json_schema",
                        "json_schema": {"name": "rationale", "schema": request.schema},
                    }
                async with gate:
                    response = await client.post(f"{self.url}/chat/completions", json=body)
                response.raise_for_status()
                data = response.json()
                choice = data["choices"][0]
                return Completion(choice["message"]["content"] or "",
                                  data.get("usage", {}).get("completion_tokens", 0),
                                  choice.get("finish_reason"), _server_logprobs(choice))

            return list(await asyncio.gather(*(one(r) for r in requests)))


class TransformersBackend:
    """Batched ``generate`` with left padding; no constrained decoding (output is parsed)."""

    name = "transformers"

    def __init__(self, model: ResolvedModel, dtype: str = "float32", batch_size: int = 16):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model.path, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(
            model.path, dtype=getattr(torch, dtype)).to(device).eval()
        self.batch_size = batch_size

    def complete(self, requests: list[ChatRequest], params: SamplingConfig) -> list[Completion]:
        out: list[Completion] = []
        for start in range(0, len(requests), self.batch_size):
            out.extend(self._batch(requests[start:start + self.batch_size], params))
        return out

    def _batch(self, requests: list[ChatRequest], params: SamplingConfig) -> list[Completion]:
        torch = self.torch
        prompts = [self.tokenizer.apply_chat_template(r.messages, add_generation_prompt=True,
                                                      tokenize=False) for r in requests]
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True,
                                add_special_tokens=False).to(self.model.device)
        temperature = requests[0].temperature
        torch.manual_seed(requests[0].seed)
        with torch.no_grad():
            generated = self.model.generate(
                **inputs, max_new_tokens=params.max_tokens,
                do_sample=temperature > 0, temperature=temperature or None,
                top_p=params.top_p if temperature > 0 else None,
                repetition_penalty=params.repetition_penalty,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = generated[:, inputs["input_ids"].shape[1]:]
        completions = []
        for row in new:
            tokens = int((row != self.tokenizer.pad_token_id).sum())
            completions.append(Completion(self.tokenizer.decode(row, skip_special_tokens=True),
                                          tokens, "stop" if tokens < len(row) else "length"))
        return completions


def make_backend(kind: str, model: ResolvedModel | None, *, server_url: str | None = None,
                 served: str | None = None, api_key: str | None = None,
                 options: EngineOptions | None = None) -> Backend:
    if server_url:
        return ServerBackend(server_url, served, api_key=api_key)
    if kind == "vllm":
        return VLLMBackend(model, options)
    if kind == "transformers":
        return TransformersBackend(model)
    if kind == "template":
        from generation.teacher import TemplateBackend

        return TemplateBackend()
    if kind == "template-balanced":
        from generation.teacher_balanced import BalancedTemplateBackend

        return BalancedTemplateBackend()
    raise ValueError(f"unknown backend {kind!r}; use vllm, transformers, template, "
                     "template-balanced or --server-url")
