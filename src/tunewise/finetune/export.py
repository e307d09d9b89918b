"""Export a trained adapter, or a merged model that plain transformers loads.

The adapter folder `tunewise train` (or the ladder's LoRA rung) writes is already a PEFT adapter in
safetensors. `export_run` copies it out with a model card (base model, data hash, config, eval
scores from the run's results.json), or with `merge=True` folds the LoRA weights into the base
(`merge_and_unload`) and saves a standalone model folder:

    AutoModelForCausalLM.from_pretrained("runs/intent-.../export/merged")
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError
from tunewise.ladder.results import Results, TrainingSummary


def _lora_line(train: dict[str, Any]) -> str:
    if train["method"] == "full":
        return "full fine-tuning (every weight trained)"
    lora = train["lora"]
    return (
        f"{train['method'].upper()} r={lora['r']}, alpha={lora['alpha']}, dropout={lora['dropout']}, "
        f"target modules {lora['target_modules']}"
    )


def model_card(config: dict[str, Any], summary: TrainingSummary, results: Results | None = None) -> str:
    """A README.md for the adapter: what it was trained from, how, and how well it scored."""
    train = config["train"]
    library = "transformers" if train["method"] == "full" else "peft"
    lines = [
        "---",
        f"library_name: {library}",
        f"base_model: {json.dumps(config['model'])}",
        "tags: [tunewise, " + ("full-fine-tune" if train["method"] == "full" else "lora") + "]",
        "---",
        "",
        f"# Fine-tuned {Path(config['model']).name} (tunewise)",
        "",
        f"- Base model: `{config['model']}`",
        f"- Method: {_lora_line(train)}",
        f"- Training data: {summary.train_examples} examples ({summary.val_examples} more held out for "
        f"validation), sha256 `{config['data_sha256'][:16]}`"
        + (f", a {config['subset']:.0%} subset" if config.get("subset") else ""),
        f"- Epochs: {summary.epochs_run:g} of {train['epochs']} configured"
        + (f", best validation loss at epoch {summary.best_epoch:g} (kept)" if summary.best_epoch is not None else ""),
        f"- Learning rate {train['learning_rate']}, batch size {train['batch_size']}, max length "
        f"{train['max_length']} tokens, seed {config['seed']}, bf16 {'on' if summary.bf16 else 'off'}",
        f"- Trained on {summary.device}: {summary.train_tokens:,} tokens in {summary.wall_s:.0f} s "
        f"({summary.tokens_per_s:,.0f} tokens/s)",
    ]
    if summary.overfitting_warning:
        lines.append(f"- Warning: {summary.overfitting_warning}")
    if summary.underfitting_note:
        lines.append(f"- Note: {summary.underfitting_note}")
    if results is not None and results.rungs:
        lines += ["", f"## Held-out scores ({results.metric}, {results.eval_examples} examples, 95% CI)", ""]
        lines += ["| rung | score | 95% CI |", "|---|---|---|"]
        for rung in results.rungs:
            if rung.score is not None:
                s = rung.score
                lines.append(f"| {rung.title} | {s.value:.3f} | {s.ci_low:.3f} - {s.ci_high:.3f} |")
    loader = (
        "model = AutoModelForCausalLM.from_pretrained(FOLDER)"
        if train["method"] == "full"
        else "model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), FOLDER)"
    )
    lines += [
        "",
        "## Training config",
        "",
        "```json",
        json.dumps(config, indent=2),
        "```",
        "",
        "## Load it",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM",
        *(["from peft import PeftModel"] if library == "peft" else []),
        loader,
        "```",
        "",
    ]
    return "\n".join(lines)


def find_adapter(ref: Path) -> Path:
    """The full-data adapter (or model) folder for a run folder, a training folder or the adapter
    folder itself; the newest one when the run trained several configs."""
    from tunewise.finetune.train import read_training_file

    ref = Path(ref)
    if read_training_file(ref) is not None:
        return ref
    candidates = [p for p in ref.glob("adapter")] + [p for p in ref.glob("model")]
    candidates += [p for p in ref.glob("*/adapter")] + [p for p in ref.glob("*/model")]
    candidates += [p for p in ref.glob("train/*/adapter")] + [p for p in ref.glob("train/*/model")]
    finished = [p for p in candidates if (record := read_training_file(p)) is not None and record["config"]["subset"] is None]
    if not finished:
        raise TunewiseError(
            f"no finished fine-tune under {ref}: give a run folder whose LoRA rung ran, a folder written by "
            "`tunewise train --out`, or the adapter folder itself"
        )
    return max(finished, key=lambda p: p.stat().st_mtime)


def _results_near(adapter: Path) -> Results | None:
    from tunewise.ladder.results import load_results

    for folder in adapter.parents:
        if (folder / "results.json").is_file():
            try:
                return load_results(folder)
            except TunewiseError:
                return None
    return None


def _replace_dir(partial: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)


def export_run(ref: Path, out: Path | None = None, merge: bool = False) -> Path:
    """Copy the adapter (or, with merge, a merged model folder) to `out`; returns the folder.

    Default `out`: <run>/export/adapter or <run>/export/merged beside the training folders.
    """
    from tunewise.finetune.train import read_training_file

    adapter = find_adapter(Path(ref))
    record = read_training_file(adapter)
    assert record is not None  # find_adapter only returns finished ones
    summary = TrainingSummary.model_validate(record["summary"])
    config = record["config"]
    results = _results_near(adapter)
    if out is None:
        run_root = adapter.parent.parent.parent if adapter.parent.parent.name == "train" else adapter.parent
        out = run_root / "export" / ("merged" if merge else "adapter")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    if merge and config["train"]["method"] != "full":
        merged_model(adapter, config["model"], partial)
    else:
        # a full fine-tune is already a standalone model folder
        shutil.copytree(adapter, partial)
    (partial / "README.md").write_text(model_card(config, summary, results), encoding="utf-8")
    _replace_dir(partial, out)
    return out


def merged_model(adapter: Path, model_spec: str, out: Path) -> None:
    """Fold the LoRA weights into the fp32 base and save a plain transformers folder (safetensors)."""
    from tunewise.finetune.train import load_finetuned

    model, tokenizer = load_finetuned(adapter, model_spec)
    merged = model.merge_and_unload()
    merged.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
