"""lora: an adapter trained on the train split (or the full weights, `train.method: full`), asked
with the zero-shot prompt. Trained once per model and run, reused by lora_rag, the learning curve's
last point and `tunewise serve` (finetune/rung.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunewise.finetune.rung import prepare_finetuned
from tunewise.rungs.base import LadderContext, Prepared, Rung

if TYPE_CHECKING:
    from tunewise.task import Task


def prepare(ctx: LadderContext) -> Prepared:
    return prepare_finetuned(ctx, with_rag=False)


def describe(task: Task) -> str:
    return "LoRA fine-tune" if task.train.method == "lora" else f"{task.train.method.upper()} fine-tune"


RUNG = Rung("lora", "LoRA fine-tune", prepare, approaches=("lora", "full_sft"), trains=True, describe=describe,
            knobs=("epochs", "learning_rate"))
