"""Supervised fine-tuning on a task's train split: LoRA (the default), full, or QLoRA on CUDA.

One call, `train_model`, does everything the ladder, the learning curve and `tunewise train` need:

- loss on assistant tokens only: the prompt is the model's chat template with the generation prompt,
  the target is the answer plus the template's end-of-turn token; prompt positions get label -100;
- a seeded validation split carved from train, validation loss every epoch (or every N steps),
  early stopping with the best checkpoint restored, and an overfitting warning with numbers;
- length-grouped batches with dynamic padding, bf16 autocast where the hardware has fast bf16;
- resumable: an interrupted run continues from its last complete checkpoint, and a finished
  adapter is reused. The folder is keyed by a hash of the data and the config, so a changed config
  trains afresh instead of resuming something else.

transformers' `Trainer` does the loop (it also runs unchanged under `accelerate launch` for DDP or
FSDP); tunewise builds the examples, the collator and the callbacks. docs/finetune.md says why not
TRL's SFTTrainer.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import resource
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewise.cost.model import charged_training_cost, training_costs
from tunewise.data.example import Example
from tunewise.errors import TunewiseError
from tunewise.finetune.model_card import model_card
from tunewise.ladder.results import LossPoint, TrainingSummary, atomic_write_text

if TYPE_CHECKING:
    from tunewise.task import Task

FORMAT_VERSION = 1
"""Version of the training folder layout (bumped on incompatible change: old folders retrain)."""

IGNORE_INDEX = -100
"""Label of a position that does not count in the loss (PyTorch cross-entropy's ignore_index)."""

TRAINING_FILE = "tunewise_training.json"
"""Written inside the final adapter folder: the summary and config that produced it."""

MIN_VALIDATION_SOURCE = 5
"""Below this many training examples no validation split is carved (nothing would be left to learn from)."""

MIN_RISE = 0.02
"""The overfitting warning fires when the last validation loss is this share above the best one."""
MIN_DROP = 0.10
"""The underfitting note fires when validation loss fell by at least this share over the last evaluation."""

Progress = Callable[[int, int], None]
"""Called after each optimizer step with (step, total steps)."""


@dataclass
class TrainOutcome:
    adapter_path: Path
    """The final adapter folder (LoRA) or model folder (full fine-tuning)."""
    summary: TrainingSummary
    folder: Path
    """The keyed training folder holding adapter/, train_config.json and, while running, checkpoints/."""
    reused: bool = False
    """True when a finished adapter was found and nothing was trained."""


# -- data -----------------------------------------------------------------------------------------


def split_validation(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, validation): round(n x fraction) examples (at least 1) held out by a seeded shuffle;
    none below MIN_VALIDATION_SOURCE examples. Both parts keep their input order.

    >>> data = [Example([{"role": "user", "content": str(i)}], str(i)) for i in range(10)]
    >>> [len(part) for part in split_validation(data, 0.2, seed=0)]
    [8, 2]
    """
    n = len(examples)
    if n < MIN_VALIDATION_SOURCE:
        return list(examples), []
    n_val = min(n - 1, max(1, round(n * fraction)))
    order = list(range(n))
    random.Random(f"validation-{seed}").shuffle(order)
    held = set(order[:n_val])
    return [ex for i, ex in enumerate(examples) if i not in held], [ex for i, ex in enumerate(examples) if i in held]


def nested_subset(examples: Sequence[Example], fraction: float, seed: int) -> list[Example]:
    """The first ceil(n x fraction) examples of one seeded permutation, in input order: a smaller
    fraction is always contained in a larger one (nested subsets make a learning curve honest).

    >>> data = [Example([{"role": "user", "content": str(i)}], str(i)) for i in range(8)]
    >>> small, large = nested_subset(data, 0.25, 0), nested_subset(data, 0.5, 0)
    >>> len(small), len(large), all(ex in large for ex in small)
    (2, 4, True)
    """
    if not 0 < fraction <= 1:
        raise TunewiseError(f"a training subset must be a fraction in (0, 1]; got {fraction!r}")
    order = list(range(len(examples)))
    random.Random(f"subset-{seed}").shuffle(order)
    keep = set(order[: max(1, math.ceil(len(examples) * fraction))])
    return [ex for i, ex in enumerate(examples) if i in keep]


def completion_text(tokenizer: Any, example: Example) -> tuple[str, str]:
    """(prompt, completion) as the chat template writes them.

    The prompt is the conversation with the generation prompt (what the model sees when asked);
    the completion is what the template puts after it for the gold answer, up to and including the
    end-of-turn token (`rate_book<|im_end|>` for ChatML), so the model learns to stop.
    """
    prompt = tokenizer.apply_chat_template(example.messages, add_generation_prompt=True, tokenize=False)
    eos = tokenizer.eos_token or ""
    full = tokenizer.apply_chat_template(
        [*example.messages, {"role": "assistant", "content": example.answer}], tokenize=False
    )
    if full.startswith(prompt) and example.answer in full[len(prompt) :]:
        completion = full[len(prompt) :]
        end = completion.rfind(eos) if eos else -1
        if end >= completion.find(example.answer) + len(example.answer):
            return prompt, completion[: end + len(eos)]  # drop the template's trailing newline
        return prompt, completion.rstrip()
    # A template that rewrites earlier turns when an answer follows: answer + eos, as generated.
    return prompt, example.answer + eos


def encode_example(tokenizer: Any, example: Example, max_length: int) -> dict[str, list[int]] | None:
    """Token ids, attention mask and labels for one example; labels are -100 on the prompt.

    Sequences longer than `max_length` are cut from the right (the prompt is kept whole where it
    fits). Returns None when nothing of the answer survives the cut.
    """
    prompt_text, answer_text = completion_text(tokenizer, example)
    prompt = list(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    answer = list(tokenizer(answer_text, add_special_tokens=False)["input_ids"])
    input_ids = (prompt + answer)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt) + answer)[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def encode_examples(tokenizer: Any, examples: Sequence[Example], max_length: int) -> tuple[list[dict], int]:
    """(encoded examples, how many were dropped because the answer did not fit in max_length)."""
    encoded = [encode_example(tokenizer, ex, max_length) for ex in examples]
    kept = [e for e in encoded if e is not None]
    return kept, len(encoded) - len(kept)


class PadCollator:
    """Dynamic padding to the longest sequence of the batch (not to max_length): with length-grouped
    batches most rows are close to that width, so little compute goes to pad tokens.

    With `keep_answer_logits`, the batch also carries `logits_to_keep`: the positions whose next token
    is a target in some row. The model then runs its vocabulary projection (and the loss its softmax)
    on those positions only; for short answers that is a few of a prompt's ~100 positions, and the
    (batch, seq, vocab) logits are the largest tensor of the step. `answer_loss` picks the same
    positions from the labels.
    """

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None, keep_answer_logits: bool = False) -> None:
        self.pad_id = pad_id
        self.multiple = pad_to_multiple_of
        self.keep_answer_logits = keep_answer_logits

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        if self.multiple:
            width = -(-width // self.multiple) * self.multiple
        input_ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)  # (batch, seq)
        attention_mask = torch.zeros((len(features), width), dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            input_ids[row, :n] = torch.tensor(f["input_ids"])
            attention_mask[row, :n] = 1
            labels[row, :n] = torch.tensor(f["labels"])
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if self.keep_answer_logits:
            batch["logits_to_keep"] = answer_positions(labels)
        return batch


def answer_positions(labels: Any) -> Any:
    """Positions p whose next token p+1 is a target in some row: (k,) from labels (batch, seq)."""
    return (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().flatten()


def answer_loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
    """Next-token cross-entropy on the answer tokens, summed and divided by the number of target
    tokens (Trainer passes that count over the whole accumulated batch, across devices).

    Works with logits for every position (batch, seq, vocab) or only for `answer_positions`
    (batch, k, vocab).
    """
    import torch.nn.functional as F

    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    targets = labels[:, 1:]
    if logits.shape[1] == labels.shape[1]:
        logits = logits[:, :-1]
    else:
        targets = targets[:, answer_positions(labels)]
    targets = targets.to(logits.device)
    total = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    count = num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE_INDEX).sum()
    return total / count


def supports_logits_to_keep(model: Any) -> bool:
    """transformers' causal LMs take `logits_to_keep` (positions to project onto the vocabulary)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


# -- the overfitting warning (pure) ---------------------------------------------------------------


def _epoch(value: float) -> str:
    return f"{round(value, 2):g}"


def _train_loss_until(points: Sequence[LossPoint], after_step: int, until_step: int) -> float | None:
    """Mean logged training loss over steps (after_step, until_step]."""
    window = [p.train_loss for p in points if p.train_loss is not None and after_step < p.step <= until_step]
    return sum(window) / len(window) if window else None


def overfitting_warning(points: Sequence[LossPoint], kept_best: bool = True, min_rise: float = MIN_RISE) -> str | None:
    """A warning in words when validation loss rose after its best evaluation, else None.

    Training loss at an evaluation is the mean logged training loss since the previous evaluation.

    >>> history = [LossPoint(step=10, epoch=1, train_loss=0.50), LossPoint(step=10, epoch=1, val_loss=0.41),
    ...            LossPoint(step=20, epoch=2, train_loss=0.30), LossPoint(step=20, epoch=2, val_loss=0.45),
    ...            LossPoint(step=30, epoch=3, train_loss=0.12), LossPoint(step=30, epoch=3, val_loss=0.52)]
    >>> print(overfitting_warning(history))  # doctest: +NORMALIZE_WHITESPACE
    validation loss rose 0.41 -> 0.52 over epochs 1-3 while training loss fell 0.50 -> 0.12: the model is
    memorising the training set. The epoch-1 checkpoint (lowest validation loss) was kept; fewer epochs,
    a lower learning rate or more data would help.
    """
    evals = sorted((p for p in points if p.val_loss is not None), key=lambda p: p.step)
    if len(evals) < 2:
        return None
    best_i = min(range(len(evals)), key=lambda i: (evals[i].val_loss, i))
    best, last = evals[best_i], evals[-1]
    if best_i == len(evals) - 1 or last.val_loss - best.val_loss <= min_rise * abs(best.val_loss):
        return None
    before_best = evals[best_i - 1].step if best_i > 0 else -1
    train_best = _train_loss_until(points, before_best, best.step)
    train_last = _train_loss_until(points, evals[-2].step, last.step)
    span = f"validation loss rose {best.val_loss:.2f} -> {last.val_loss:.2f} over epochs {_epoch(best.epoch)}-{_epoch(last.epoch)}"
    kept = (
        f"The epoch-{_epoch(best.epoch)} checkpoint (lowest validation loss) was kept"
        if kept_best
        else "The last checkpoint was kept"
    )
    if train_best is not None and train_last is not None and train_last < train_best:
        return (
            f"{span} while training loss fell {train_best:.2f} -> {train_last:.2f}: the model is memorising "
            f"the training set. {kept}; fewer epochs, a lower learning rate or more data would help."
        )
    trend = "" if train_best is None or train_last is None else f" ({train_best:.2f} -> {train_last:.2f})"
    return (
        f"{span} and training loss did not fall either{trend}: training is unstable; "
        f"try a lower learning rate. {kept}."
    )


def underfitting_note(points: Sequence[LossPoint], epochs: float, min_drop: float = MIN_DROP) -> str | None:
    """A note in words when validation loss was still falling clearly at the last evaluation, else None.

    >>> history = [LossPoint(step=40, epoch=1, val_loss=0.054), LossPoint(step=80, epoch=2, val_loss=0.035)]
    >>> print(underfitting_note(history, epochs=2))  # doctest: +NORMALIZE_WHITESPACE
    validation loss was still falling at the last evaluation (0.054 -> 0.035 over epochs 1-2, -35%): the
    model may be undertrained; try more epochs (train.epochs, now 2) or a higher learning rate, and
    early stopping will keep the best checkpoint.
    """
    evals = sorted((p for p in points if p.val_loss is not None), key=lambda p: p.step)
    if len(evals) < 2 or not all(math.isfinite(p.val_loss) for p in evals):
        return None
    prev, last = evals[-2], evals[-1]
    if last.val_loss >= min(p.val_loss for p in evals[:-1]) or prev.val_loss <= 0:
        return None  # not a new best: early stopping's case, or a wobble
    drop = (prev.val_loss - last.val_loss) / prev.val_loss
    if drop < min_drop:
        return None
    return (
        f"validation loss was still falling at the last evaluation ({prev.val_loss:.3g} -> {last.val_loss:.3g} over "
        f"epochs {_epoch(prev.epoch)}-{_epoch(last.epoch)}, -{drop:.0%}): the model may be undertrained; try more "
        f"epochs (train.epochs, now {epochs:g}) or a higher learning rate, and early stopping will keep the best checkpoint."
    )


# -- checkpoints ----------------------------------------------------------------------------------


def _checkpoint_step(path: Path) -> int | None:
    prefix = "checkpoint-"
    if not path.name.startswith(prefix) or not path.name[len(prefix) :].isdigit():
        return None
    return int(path.name[len(prefix) :])


def _is_complete(checkpoint: Path) -> bool:
    # Trainer writes trainer_state.json last, after weights, optimizer, scheduler and RNG state; a
    # folder without a readable one was cut off mid-write.
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(folder: Path, delete_incomplete: bool = True) -> Path | None:
    """The highest-step checkpoint-N folder that was fully written; incomplete ones are deleted so
    the Trainer's own checkpoint rotation never picks them up."""
    if not folder.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for path in folder.iterdir():
        step = _checkpoint_step(path)
        if step is None or not path.is_dir():
            continue
        if not _is_complete(path):
            if delete_incomplete:
                shutil.rmtree(path, ignore_errors=True)
            continue
        if best is None or step > best[0]:
            best = (step, path)
    return best[1] if best else None


# -- configuration --------------------------------------------------------------------------------


def resolve_train_bf16(setting: str, cuda: bool) -> bool:
    """bf16 autocast for training: "auto" is on for CUDA cards with bf16 and for CPUs with native bf16
    matmuls (AVX512-BF16 or AMX). Training runs large matmuls, where bf16 pays off (measured ~2.4x on
    an AVX512-BF16 CPU); generation on CPU is a different trade-off (tunewise.models.hf)."""
    if setting not in ("auto", "on", "off"):
        raise TunewiseError(f"train.bf16 must be one of auto, on, off (got {setting!r})")
    import torch

    if setting == "off":
        return False
    if cuda:
        supported = torch.cuda.is_bf16_supported()
        if setting == "on" and not supported:
            raise TunewiseError("train.bf16 is 'on' but this GPU has no bf16 support; set train.bf16: off or auto")
        return supported
    if setting == "on":
        return True
    from tunewise.models.hf import cpu_supports_bf16

    return cpu_supports_bf16()


def _examples_digest(examples: Sequence[Example]) -> str:
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps(ex.to_chat(), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def training_config(
    task: Task, data_digest: str, model_spec: str, subset: float | None, validation_digest: str | None
) -> dict[str, Any]:
    """Everything that determines the trained weights; its hash names the training folder."""
    # How often checkpoints are saved does not change the weights: excluded, so changing it (or the
    # field's arrival) reuses finished adapters.
    # raft: how lora_rag builds its examples (its adapter's hash covers them through the examples).
    spec = task.train.model_dump(mode="json", exclude={"learning_curve", "checkpoint_every_minutes", "raft"})
    return {
        "format": FORMAT_VERSION,
        "model": model_spec,
        "train": spec,
        "seed": task.data.seed,
        "data_sha256": data_digest,
        "validation_sha256": validation_digest,
        "subset": None if subset is None or subset >= 1 else subset,
    }


def config_key(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def training_folder(out_dir: Path, config: dict[str, Any]) -> Path:
    """out_dir/<method>-<share>-<hash>, e.g. runs/x/train/lora-full-3fa9c2d1e0ab."""
    share = "full" if config["subset"] is None else f"{round(config['subset'] * 100):g}pct"
    return Path(out_dir) / f"{config['train']['method']}-{share}-{config_key(config)}"


def _resolve_spec(spec: str) -> str:
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


# -- models ---------------------------------------------------------------------------------------


def _load_base(spec: str, method: str, cuda: bool, bf16: bool) -> tuple[Any, Any]:
    import torch

    if method == "qlora":
        return _load_qlora_base(spec, cuda)
    from tunewise.models.resolve import load_pretrained

    # A LoRA base is frozen: holding it in bf16 halves its memory and spares autocast re-casting the
    # frozen weights on every matmul; the adapter stays fp32. Full fine-tuning keeps fp32 master weights.
    dtype = torch.bfloat16 if method == "lora" and bf16 else torch.float32
    return load_pretrained(spec, dtype=dtype)


def _load_qlora_base(spec: str, cuda: bool) -> tuple[Any, Any]:
    import importlib.util

    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    if not (cuda and has_bnb):
        missing = [what for what, ok in (("a CUDA GPU", cuda), ("the bitsandbytes package", has_bnb)) if not ok]
        raise TunewiseError(
            f"train.method qlora needs a CUDA GPU and bitsandbytes; missing: {' and '.join(missing)}. "
            "Use method: lora (same adapter, unquantised base) or method: full, or run on a CUDA machine "
            "with `pip install bitsandbytes`"
        )
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from tunewise.models.resolve import load_pretrained

    # load_pretrained resolves the spec (and builds the GGUF cache); the quantised copy is read from
    # the same folder.
    model, tokenizer = load_pretrained(spec)
    source = model.config._name_or_path
    del model
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16,
    )
    model = AutoModelForCausalLM.from_pretrained(source, quantization_config=quant, use_safetensors=True)
    return prepare_model_for_kbit_training(model), tokenizer


def _with_lora(model: Any, task: Task) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = task.train.lora
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as err:  # target modules not found in this architecture
        names = sorted({name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name})
        raise TunewiseError(
            f"train.lora.target_modules {lora.target_modules!r} do not fit this model ({err}); "
            f"use all-linear or names from: {', '.join(names[:30])}"
        ) from None


def load_finetuned(adapter_path: Path, model_spec: str) -> tuple[Any, Any]:
    """(model, tokenizer) for inference: the base with the LoRA adapter on top, or the fully
    fine-tuned model folder. The model is in eval mode, fp32."""
    from tunewise.models.resolve import load_pretrained

    adapter_path = Path(adapter_path)
    if (adapter_path / "adapter_config.json").is_file():
        from tunewise.models.hf import attach_adapter

        model, tokenizer = load_pretrained(model_spec)
        model = attach_adapter(model, adapter_path)
    else:
        model, tokenizer = load_pretrained(str(adapter_path))
    model.eval()
    return model, tokenizer


def read_training_file(adapter_path: Path) -> dict[str, Any] | None:
    """The summary and config stored with a finished adapter, or None if it is not one."""
    try:
        data = json.loads((Path(adapter_path) / TRAINING_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if data.get("format") == FORMAT_VERSION else None


# -- measurement ----------------------------------------------------------------------------------


def peak_memory_mb(cuda: bool) -> float:
    """Peak GPU memory allocated by torch on CUDA; else the process's peak resident set (RSS)."""
    if cuda:
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def upfront_training_cost(task: Task, summary: TrainingSummary) -> float:
    """The one-off cost the ladder charges a fine-tuned rung (`tunewise.cost.charged_training_cost`):
    GPU cost when self-hosting, else hosted; 0.0 when the task prices no training."""
    return charged_training_cost(task.business.pricing, summary.gpu_cost_estimate, summary.hosted_cost_estimate)


def loss_points(log_history: Sequence[dict[str, Any]]) -> list[LossPoint]:
    points = []
    for entry in log_history:
        if "loss" in entry:
            points.append(LossPoint(step=entry["step"], epoch=round(entry["epoch"], 4), train_loss=entry["loss"]))
        elif "eval_loss" in entry:
            points.append(LossPoint(step=entry["step"], epoch=round(entry["epoch"], 4), val_loss=entry["eval_loss"]))
    return points


# -- training -------------------------------------------------------------------------------------


def _callbacks(progress: Progress | None, extra: Sequence[Any]) -> list[Any]:
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if progress is not None and state.is_world_process_zero:
                progress(state.global_step, state.max_steps)

    return [ProgressCallback(), *extra]


_monotonic = time.monotonic  # the checkpoint budget's clock (a test replaces it)


def _checkpoint_budget(minutes: float | None) -> list[Any]:
    """A callback that saves a checkpoint once `minutes` have passed since the last save (or the
    start), so a kill mid-epoch loses at most that much training; the epoch-end and eval-step
    checkpoints still happen as before. None: no callback."""
    if minutes is None:
        return []
    from transformers import TrainerCallback

    class TimedCheckpoint(TrainerCallback):
        last = 0.0

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self.last = _monotonic()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if not control.should_save and _monotonic() - self.last >= minutes * 60:
                control.should_save = True  # the Trainer saves (and rotates) right after this step

        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
            self.last = _monotonic()

    return [TimedCheckpoint()]


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def train_model(
    task: Task,
    train_examples: Sequence[Example],
    out_dir: Path,
    model_spec: str | None = None,
    subset: float | None = None,
    resume: bool = True,
    progress: Progress | None = None,
    *,
    validation: Sequence[Example] | None = None,
    callbacks: Sequence[Any] = (),
    log: Callable[[str], None] | None = None,
) -> TrainOutcome:
    """Fine-tune `model_spec` (default: task.model) on `train_examples` as task.train says.

    `subset` trains on a nested seeded share of the examples (the learning curve); the validation
    split is carved before subsetting, so every share is validated on the same examples. Pass
    `validation` to use your own validation examples instead. `callbacks` are extra transformers
    TrainerCallbacks. Returns the adapter folder and a TrainingSummary; a finished adapter with the
    same data and config is returned without training (`reused=True`).
    """
    import torch

    say = log or (lambda _message: None)
    spec = _resolve_spec(model_spec or task.model)
    if spec.startswith("openai:"):
        raise TunewiseError(
            f"model {spec!r} is an API model: tunewise fine-tunes local weights only. Set `model:` to embedded, "
            "a local folder, a .gguf or a hub id (hosted fine-tuning is costed by `tunewise estimate`, not run)"
        )
    method = task.train.method
    if validation is None:
        train_part, val_part = split_validation(train_examples, task.train.validation_fraction, task.data.seed)
    else:
        train_part, val_part = list(train_examples), list(validation)
    if subset is not None and subset < 1:
        train_part = nested_subset(train_part, subset, task.data.seed)
    if not train_part:
        raise TunewiseError("no training examples: the train split is empty; give `data.train` with examples")

    config = training_config(
        task, _examples_digest(train_examples), spec, subset, _examples_digest(validation) if validation is not None else None
    )
    folder = training_folder(Path(out_dir), config)
    adapter_dir = folder / ("adapter" if method != "full" else "model")
    done = read_training_file(adapter_dir)
    if done is not None:
        summary = TrainingSummary.model_validate(done["summary"])
        return TrainOutcome(adapter_dir, summary, folder, reused=True)

    cuda = torch.cuda.is_available()
    bf16 = resolve_train_bf16(task.train.bf16, cuda)
    from transformers import set_seed

    set_seed(task.data.seed)  # the LoRA A matrices are initialised before the Trainer seeds anything
    model, tokenizer = _load_base(spec, method, cuda, bf16)
    if not getattr(tokenizer, "chat_template", None):
        raise TunewiseError(
            f"model {spec!r} has no chat template, so assistant turns cannot be marked for the loss; "
            "use an instruct/chat model or set tokenizer.chat_template in the model folder"
        )
    train_set, dropped = encode_examples(tokenizer, train_part, task.train.max_length)
    val_set, val_dropped = encode_examples(tokenizer, val_part, task.train.max_length)
    if dropped or val_dropped:
        say(
            f"{dropped + val_dropped} example(s) skipped: their prompt alone fills train.max_length="
            f"{task.train.max_length} tokens, leaving no answer to learn; raise train.max_length"
        )
    if not train_set:
        raise TunewiseError(
            f"no trainable examples: every prompt is longer than train.max_length={task.train.max_length}; raise it"
        )
    if method in ("lora", "qlora"):
        model = _with_lora(model, task)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token

    folder.mkdir(parents=True, exist_ok=True)
    if _is_main_process():
        atomic_write_text(folder / "train_config.json", json.dumps(config, indent=2))
    checkpoints = folder / "checkpoints"
    if not resume and _is_main_process():
        shutil.rmtree(checkpoints, ignore_errors=True)
    resume_from = last_complete_checkpoint(checkpoints, delete_incomplete=_is_main_process()) if resume else None

    extra = [*callbacks, *_checkpoint_budget(task.train.checkpoint_every_minutes)]
    trainer = _trainer(task, model, tokenizer, train_set, val_set, checkpoints, cuda, bf16, _callbacks(progress, extra))
    trainer.accelerator.wait_for_everyone()  # incomplete checkpoints are gone before any rank looks
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    if resume_from is not None:
        say(f"resuming from {resume_from.name} (an earlier run was interrupted)")
    tokens_before = 0
    if resume_from is not None:
        tokens_before = json.loads((resume_from / "trainer_state.json").read_text()).get("num_input_tokens_seen", 0)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    wall = time.perf_counter() - started

    state = trainer.state
    points = loss_points(state.log_history)
    has_val = bool(val_set)
    warning = overfitting_warning(points, kept_best=has_val)
    still_falling = underfitting_note(points, task.train.epochs)
    tokens_per_epoch = sum(len(e["input_ids"]) for e in train_set)
    trained_tokens = int(state.num_input_tokens_seen)
    session_tokens = trained_tokens - int(tokens_before)
    best_epoch = None
    if has_val and state.best_global_step:
        best_epoch = next((p.epoch for p in points if p.val_loss is not None and p.step == state.best_global_step), None)
    gpu_seconds = wall * trainer.args.world_size if cuda else None  # on a CPU: the assumed GPU throughput
    gpu_cost, hosted_cost = training_costs(tokens_per_epoch, task.train.epochs, task.business.pricing, gpu_seconds)
    summary = TrainingSummary(
        method=method,
        train_examples=len(train_set),
        val_examples=len(val_set),
        epochs_run=round(float(state.epoch or 0.0), 4),
        best_epoch=best_epoch,
        train_tokens=trained_tokens,
        tokens_per_s=session_tokens / wall if wall > 0 and session_tokens > 0 else 0.0,
        wall_s=wall,
        peak_memory_mb=peak_memory_mb(cuda),
        device=_device_name(cuda, trainer.args.world_size),
        bf16=bf16,
        loss_curve=points,
        overfitting_warning=warning,
        underfitting_note=still_falling,
        adapter_path=str(adapter_dir),
        gpu_cost_estimate=gpu_cost,
        hosted_cost_estimate=hosted_cost,
    )
    if warning:
        say(f"Overfitting: {warning}")
    if still_falling:
        say(f"Undertrained? {still_falling}")
    _save_final(trainer, adapter_dir, summary, config, tokens_per_epoch)
    if _is_main_process():
        shutil.rmtree(checkpoints, ignore_errors=True)  # the adapter is safe; checkpoints are large
    return TrainOutcome(adapter_dir, summary, folder)


def _device_name(cuda: bool, world_size: int) -> str:
    import torch

    if cuda:
        name = f"cuda ({torch.cuda.get_device_name(0)})"
    else:
        name = f"cpu ({os.cpu_count()} cores)"
    return f"{world_size} x {name}" if world_size > 1 else name


def _trainer(
    task: Task,
    model: Any,
    tokenizer: Any,
    train_set: list[dict],
    val_set: list[dict],
    checkpoints: Path,
    cuda: bool,
    bf16: bool,
    callbacks: list[Any],
) -> Any:
    from transformers import EarlyStoppingCallback, PrinterCallback, Trainer, TrainingArguments

    spec = task.train
    has_val = bool(val_set)
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    steps_per_epoch = max(1, math.ceil(len(train_set) / (spec.batch_size * world)))
    by_steps = spec.eval_every_steps is not None
    strategy = "steps" if by_steps else "epoch"
    args = TrainingArguments(
        output_dir=str(checkpoints),
        per_device_train_batch_size=spec.batch_size,
        per_device_eval_batch_size=spec.batch_size,
        num_train_epochs=spec.epochs,
        learning_rate=spec.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0.03,  # a share of all steps
        weight_decay=0.0,
        logging_strategy="steps",
        logging_steps=max(1, steps_per_epoch // 10),
        eval_strategy=strategy if has_val else "no",
        eval_steps=spec.eval_every_steps if by_steps else None,
        save_strategy=strategy,
        save_steps=spec.eval_every_steps if by_steps else 500,
        save_total_limit=2,  # the best and the latest are both kept
        load_best_model_at_end=has_val,
        metric_for_best_model="eval_loss" if has_val else None,
        greater_is_better=False if has_val else None,
        train_sampling_strategy="group_by_length",
        bf16=bf16,
        use_cpu=not cuda,
        seed=task.data.seed,
        data_seed=task.data.seed,
        include_num_input_tokens_seen="non_padding",
        prediction_loss_only=True,  # validation needs the loss, not every logit
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    if has_val and spec.early_stopping_patience > 0:
        callbacks = [*callbacks, EarlyStoppingCallback(early_stopping_patience=spec.early_stopping_patience)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set or None,
        data_collator=PadCollator(pad_id, 8 if cuda else None, keep_answer_logits=supports_logits_to_keep(model)),
        processing_class=tokenizer,
        callbacks=callbacks,
        compute_loss_func=answer_loss,
    )
    trainer.remove_callback(PrinterCallback)  # tunewise prints its own progress and loss table
    return trainer


def _save_final(trainer: Any, adapter_dir: Path, summary: TrainingSummary, config: dict[str, Any], tokens_per_epoch: int) -> None:
    """Write the adapter (or model) to a partial folder, then rename it into place: a crash leaves
    either no adapter or a complete one, never half of one."""
    main = _is_main_process()
    partial = adapter_dir.parent / f".{adapter_dir.name}.partial"
    if main:
        shutil.rmtree(partial, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(partial))  # every rank calls it: FSDP gathers the sharded weights here
    if main:
        # Trainer also pickles its arguments; tunewise keeps the config as JSON and ships no pickles.
        (partial / "training_args.bin").unlink(missing_ok=True)
        record = {
            "format": FORMAT_VERSION,
            "summary": summary.model_dump(mode="json"),
            "config": config,
            "tokens_per_epoch": tokens_per_epoch,
        }
        (partial / TRAINING_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
        (partial / "README.md").write_text(model_card(config, summary), encoding="utf-8")
        if adapter_dir.exists():
            shutil.rmtree(adapter_dir)
        os.replace(partial, adapter_dir)
    trainer.accelerator.wait_for_everyone()
