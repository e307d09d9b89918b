"""`tunewise export RUN [--merge] [--out DIR]`: the run's adapter, or a merged standalone model."""

from __future__ import annotations

from pathlib import Path

import click

from tunewise.paths import resolve_run


@click.command("export")
@click.argument("run")
@click.option("--merge", is_flag=True, help="fold the LoRA weights into the base and write a standalone model folder")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="destination folder (default: RUN/export/adapter or RUN/export/merged)")
@click.option("--json", "as_json", is_flag=True, help="print the written folder as JSON")
def command(run: str, merge: bool, out_dir: Path | None, as_json: bool) -> None:
    """Export RUN's fine-tuned adapter (a run folder or id, a `tunewise train` folder, or an adapter folder)."""
    from tunewise.finetune.export import export_run
    from tunewise.ui import console, print_json

    folder = export_run(resolve_run(run), out_dir, merge=merge)
    if as_json:
        print_json({"folder": str(folder), "merged": merge})
        return
    what = "merged model (load with AutoModelForCausalLM.from_pretrained)" if merge else "adapter (PEFT, safetensors)"
    console.print(f"{what}: {folder}", markup=False, soft_wrap=True)
