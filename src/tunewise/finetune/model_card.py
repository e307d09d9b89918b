"""The README.md written beside a trained adapter or model: what it was trained from, how, how well it
scored, and how to load it.

Its own module because both sides need it: training writes the card with the adapter
(`finetune/train.py`), and export rewrites it with the run's scores (`finetune/export.py`), which
itself reads training's files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
