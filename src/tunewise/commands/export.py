"""`tunewise export RUN [--merge] [--out DIR]`: the run's adapter, or a merged standalone model."""

from __future__ import annotations

from pathlib import Path

import click

from tunewise.errors import TunewiseError


def resolve_run(ref: str) -> Path:
    """A path as given, else a run id under the runs folder, else a run id in the run store."""
    from tunewise.paths import runs_dir

    path = Path(ref)
    if path.exists():
        return path
    if (runs_dir() / ref).exists():
        return runs_dir() / ref
    try:
        from tunewise.ladder.store import RunStore

        store = RunStore()
        try:
            row = store.get(ref)
        finally:
            store.close()
    except ImportError:
        row = None
    if row is not None:
        return Path(row["run_dir"])
    raise TunewiseError(
        f"no run {ref!r}: not a folder and not a run id under {runs_dir()}; list runs with `tunewise runs`"
    )


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
