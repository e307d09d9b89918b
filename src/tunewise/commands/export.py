"""`tunewise export RUN [--merge] [--for ENGINE] [--out DIR]`: the run's adapter, a merged standalone
model, or what a serving engine (vLLM, Ollama, llama.cpp, LoRAX) needs, with the command to start it."""

from __future__ import annotations

from pathlib import Path

import click

from tunewise.finetune.gguf_export import GGUF_TYPES
from tunewise.paths import resolve_run

ENGINE_NAMES = ("vllm", "ollama", "llamacpp", "lorax")  # tunewise.finetune.export.ENGINES, without importing it


@click.command("export")
@click.argument("run")
@click.option("--merge", is_flag=True, help="fold the LoRA weights into the base and write a standalone model folder")
@click.option("--for", "engine", type=click.Choice(ENGINE_NAMES), help="write what this serving engine needs, with its launch command")
@click.option("--rung", help="with --for: export this measured rung instead of the run's decision")
@click.option("--gguf-type", type=click.Choice(GGUF_TYPES), default="f16", show_default=True, help="weight type of a GGUF written for llamacpp or ollama")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="destination folder (default: RUN/export/adapter, merged or ENGINE)")
@click.option("--json", "as_json", is_flag=True, help="print what was written as JSON")
def command(run: str, merge: bool, engine: str | None, rung: str | None, gguf_type: str, out_dir: Path | None, as_json: bool) -> None:
    """Export RUN's fine-tuned adapter (a run folder or id, a `tunewise train` folder, or an adapter
    folder), or with --for ENGINE its chosen configuration for that engine."""
    from tunewise.ui import console, print_json

    if engine is None:
        if rung is not None:
            raise click.UsageError("--rung applies to --for ENGINE exports; the plain export is the run's fine-tune")
        from tunewise.finetune.export import export_run

        folder = export_run(resolve_run(run), out_dir, merge=merge)
        if as_json:
            print_json({"folder": str(folder), "merged": merge})
            return
        what = "merged model (load with AutoModelForCausalLM.from_pretrained)" if merge else "adapter (PEFT, safetensors)"
        console.print(f"{what}: {folder}", markup=False, soft_wrap=True)
        return
    if merge:
        raise click.UsageError("--merge and --for do not combine: --for writes what the engine needs (a merged GGUF for llamacpp)")
    from tunewise.finetune.export import export_for

    result = export_for(resolve_run(run), engine, out_dir, rung=rung, gguf_type=gguf_type)
    if as_json:
        print_json({"folder": str(result.folder), "engine": engine, "command": result.command, "files": result.files,
                    "not_reproduced": result.not_reproduced})
        return
    console.print(f"{engine} export: {result.folder} (README.md has the commands)", markup=False, soft_wrap=True)
    console.print(f"  start: {result.command}", markup=False, soft_wrap=True)
    for note in result.not_reproduced:
        console.print(f"  not reproduced by {engine}: {note}", markup=False, soft_wrap=True)
