"""The fine-tuned rungs of the ladder: `lora` (the adapter alone) and `lora_rag` (an adapter answering
with retrieved documents, built exactly like the `rag` rung's prompt).

`lora`'s adapter is trained once per run under <run>/train/ on the bare questions and reused after
that (also by the learning curve's 100% point and by `tunewise serve`); `lora_rag` trains its own on
RAFT prompts (finetune/raft.py) under <run>/train-raft/ through the same `train_adapter`.

The rungs generate the way a single adapter is deployed: folded into the base weights
(`merge_and_unload`), so each layer runs one matmul instead of base + LoRA A + LoRA B. Greedy answers
are the same as the unmerged PEFT wrapper's (tests/test_export.py checks it on the tiny model), and
bench/bench_merge.py measures the speed difference.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunewise.data.example import Example
from tunewise.models.base import ChatModel
from tunewise.rungs.base import LadderContext, Prepared, plain_request, rag_request

_LOADED: "weakref.WeakValueDictionary[str, Any]" = weakref.WeakValueDictionary()
"""adapter folder -> the loaded model, while some rung (or the learning curve) still holds it."""


def generation_options(task: Any) -> dict[str, Any]:
    """The base model's generation settings (task.model_options, ladder batch size), so the fine-tuned
    rungs are timed and batched like the prompted ones."""
    opts = task.model_options.model_dump(exclude_none=True)
    local = {k: v for k, v in opts.items() if k in ("bf16", "max_batch_tokens")}
    return {**local, "max_batch_size": task.ladder.batch_size}


def merge_adapter(model: Any) -> Any:
    """A PEFT model with its LoRA weights folded into the base (a plain transformers model); any
    other model unchanged. The base is fp32 here (`load_finetuned`), so the fold adds no rounding
    beyond fp32's own: W + s * B @ A is computed once instead of at every forward pass."""
    from peft import PeftModel

    return model.merge_and_unload() if isinstance(model, PeftModel) else model


def finetuned_model(adapter_path: Path, task: Any, merge: bool = True) -> ChatModel:
    """A ChatModel over the fine-tuned weights, loaded once: the adapter merged into the base (as
    deployed), or with `merge=False` the PEFT wrapper (base + adapter computed separately)."""
    options = generation_options(task)
    key = f"{Path(adapter_path).resolve()}|merge={merge}|{task.model_options.engine}|{sorted(options.items())}"
    model = _LOADED.get(key)
    if model is None and task.model_options.engine == "vllm":
        # vLLM serves a LoRA adapter through its own LoRA kernels (how it would be deployed there);
        # a full fine-tune is a model folder of its own.
        from tunewise.models.vllm_engine import VLLMModel

        is_adapter = (Path(adapter_path) / "adapter_config.json").is_file()
        spec = task.model if is_adapter else str(adapter_path)
        model = VLLMModel.from_spec(spec, adapter=adapter_path if is_adapter else None, **options)
        _LOADED[key] = model
    if model is None:
        from tunewise.finetune.train import load_finetuned
        from tunewise.models.hf import TransformersModel
        from tunewise.models.resolve import model_name

        weights, tokenizer = load_finetuned(adapter_path, task.model)
        if merge:
            weights = merge_adapter(weights)
        name = f"{model_name(task.model)}+{Path(adapter_path).parent.name}"
        model = TransformersModel(weights, tokenizer, name, **options)
        _LOADED[key] = model
    return model


def prepared_from_adapter(ctx: LadderContext, adapter_path: Path, summary: Any, with_rag: bool) -> Prepared:
    """The rung's Prepared for a trained adapter: the same request building as zero_shot or rag."""
    from tunewise.finetune.train import upfront_training_cost

    model = finetuned_model(adapter_path, ctx.task)
    system = ctx.system_prompt
    build = rag_request(system, ctx.retriever(), ctx.task.ladder.rag.k) if with_rag else plain_request(system)
    return Prepared(
        model=model,
        build=build,
        finetuned=True,
        upfront_cost=upfront_training_cost(ctx.task, summary),
        details={"training": summary, "rag": with_rag},
        adapter_path=Path(adapter_path),
    )


def train_adapter(ctx: LadderContext, examples: Sequence[Example] | None = None, folder: Path | None = None) -> Any:
    """Train (or reuse) an adapter on `examples` (default ctx.train) in `folder` (default ctx.train_dir,
    shared by the rungs that train on the plain train split): a rung that trains on other examples
    (RAFT prompts, a teacher's answers) passes its own folder. Returns finetune.train's TrainOutcome."""
    from tunewise.finetune.train import train_model
    from tunewise.ui import err_console, progress_bar

    task = ctx.task
    with progress_bar(f"Fine-tuning ({task.train.method}) steps", None) as advance:
        return train_model(
            task,
            ctx.train if examples is None else examples,
            ctx.train_dir if folder is None else folder,
            progress=lambda step, steps: advance(1),
            log=lambda message: err_console.print(message),
        )


def prepare_finetuned(ctx: LadderContext, with_rag: bool) -> Prepared:
    """Train (or reuse) the run's adapter on ctx.train and serve it as a rung."""
    outcome = train_adapter(ctx)
    return prepared_from_adapter(ctx, outcome.adapter_path, outcome.summary, with_rag)
