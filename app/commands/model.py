"""`rationale-audit model`: prepare and inspect the generator model."""

import json
from pathlib import Path

import typer
from rich.console import Console

from app.common import config_options, user_errors
from generation.models import MARKER, resolve_model, verify_prepared
from generation.models_config import ModelPrepareConfig

app = typer.Typer(help="Prepare the model that writes rationales (bundled, local or hub).",
                  no_args_is_help=True)
console = Console(soft_wrap=True)  # paths and hashes stay copyable


@app.command()
@user_errors
@config_options(ModelPrepareConfig)
def prepare(cfg: ModelPrepareConfig, cache_dir: str | None = None) -> None:
    """Resolve a model spec to a folder vLLM and transformers can load.

    The bundled GGUF is dequantized once (about 20 s) and reused afterwards.

    Example:

        rationale-audit model prepare
        rationale-audit model prepare --model ./models/my-finetuned-llama
    """
    with console.status("resolving model") as status:
        resolved = resolve_model(cfg.model, cache_dir=cache_dir, on_stage=status.update)
        if cfg.verify:
            status.update("verifying checksum")
            verify_prepared(resolved)
    console.print(f"[bold]{resolved.spec}[/] ({resolved.source}) → {resolved.path}",
                  highlight=False)
    marker = Path(resolved.path) / MARKER
    if marker.is_file():
        info = json.loads(marker.read_text())
        console.print(
            f"from {info['source_package']} · sha256 {info['safetensors_sha256'][:16]}… · "
            f"{info['safetensors_bytes'] / 1e6:.0f} MB {info['dtype']}"
            + (" · checksum verified" if cfg.verify else ""),
            highlight=False,
        )
