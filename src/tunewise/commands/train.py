"""`tunewise train TASK.yaml`: fine-tune on the task's train split and show how it went.

Multi-GPU: the same command under accelerate, e.g.
    accelerate launch --num_processes 8 -m tunewise.cli train TASK.yaml
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from tunewise.task import TaskError, TrainSpec


def _main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def with_overrides(task: Any, **overrides: Any) -> Any:
    """The task with command-line values in train.*; validated like the task file."""
    train = task.train.model_dump()
    lora = dict(train["lora"])
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("r", "alpha"):
            lora[key] = value
        else:
            train[key] = value
    train["lora"] = lora
    try:
        spec = TrainSpec.model_validate(train)
    except ValidationError as err:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})" for e in err.errors()]
        raise TaskError("command-line training options: " + "; ".join(problems)) from None
    return task.model_copy(update={"train": spec})


def loss_table(summary: Any) -> Any:
    """One row per evaluation: epoch, step, mean training loss since the last one, validation loss."""
    from rich.table import Table

    table = Table(title="Loss", show_edge=False)
    for column in ("epoch", "step", "train loss", "val loss"):
        table.add_column(column, justify="right")
    points = summary.loss_curve
    evals = [p for p in points if p.val_loss is not None]
    if not points:
        return table
    marks = evals or [max(points, key=lambda p: p.step)]  # no validation: one row for the whole run
    previous = -1
    for mark in marks:
        window = [p.train_loss for p in points if p.train_loss is not None and previous < p.step <= mark.step]
        train = f"{sum(window) / len(window):.3f}" if window else "-"
        val = f"{mark.val_loss:.3f}" if mark.val_loss is not None else "-"
        best = " *" if summary.best_epoch is not None and mark.epoch == summary.best_epoch and mark.val_loss is not None else ""
        table.add_row(f"{mark.epoch:g}", str(mark.step), train, val + best)
        previous = mark.step
    return table


def _context(task: Any, train: list, evals: list, run_dir: Path) -> Any:
    """A ladder context for the learning curve: models and retrieval built on first use."""
    from tunewise.rungs.base import LadderContext

    cache: dict[str, Any] = {}

    def lazy(name: str, build: Any) -> Any:
        def get() -> Any:
            if name not in cache:
                cache[name] = build()
            return cache[name]

        return get

    def base_model() -> Any:
        from tunewise.finetune.rung import generation_options
        from tunewise.models.resolve import load_model

        return load_model(task.model, **generation_options(task))

    def embedder() -> Any:
        from tunewise.retrieval.embed import load_embedder

        return load_embedder()

    def retriever() -> Any:
        from tunewise.retrieval.index import build_retriever

        return build_retriever(task, embedder=get_embedder())

    get_embedder = lazy("embedder", embedder)
    return LadderContext(
        task, train, evals, run_dir, lazy("model", base_model), lazy("retriever", retriever), get_embedder, seed=task.data.seed
    )


@click.command("train")
@click.argument("task_file", metavar="TASK.yaml", type=click.Path(path_type=Path))
@click.option("--method", type=click.Choice(["lora", "full", "qlora"]), help="override train.method")
@click.option("--epochs", type=int, help="override train.epochs")
@click.option("--lr", "learning_rate", type=float, help="override train.learning_rate")
@click.option("--rank", "r", type=int, help="override train.lora.r")
@click.option("--alpha", type=int, help="override train.lora.alpha")
@click.option("--batch-size", type=int, help="override train.batch_size")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="training folder (default: runs/<task>-train)")
@click.option("--learning-curve", is_flag=True, help="also train on the task's train.learning_curve shares and fit the curve")
@click.option("--fresh", is_flag=True, help="ignore checkpoints of an interrupted run and start over")
@click.option("--json", "as_json", is_flag=True, help="print the training summary as JSON")
def command(
    task_file: Path,
    method: str | None,
    epochs: int | None,
    learning_rate: float | None,
    r: int | None,
    alpha: int | None,
    batch_size: int | None,
    out_dir: Path | None,
    learning_curve: bool,
    fresh: bool,
    as_json: bool,
) -> None:
    """Fine-tune (LoRA or full) on TASK.yaml's train split; an interrupted run resumes when rerun."""
    from tunewise.ui import progress_layout

    from tunewise.data.splits import load_splits
    from tunewise.finetune.train import train_model
    from tunewise.paths import runs_dir
    from tunewise.task import load_task
    from tunewise.ui import console, err_console, print_json

    task = with_overrides(
        load_task(task_file), method=method, epochs=epochs, learning_rate=learning_rate, r=r, alpha=alpha, batch_size=batch_size
    )
    train, evals = load_splits(task)
    out_dir = out_dir or runs_dir() / f"{task.name}-train"
    main = _main_process()
    say = (lambda message: err_console.print(message, markup=False)) if main else (lambda message: None)
    _quiet_transformers()

    progress = progress_layout(disable=not main)
    with progress:
        bar = progress.add_task("Training steps", total=None)

        def advance(step: int, steps: int) -> None:
            progress.update(bar, completed=step, total=steps)

        outcome = train_model(task, train, out_dir, resume=not fresh, progress=advance, log=say)
    if not main:
        return
    s = outcome.summary
    curve = None
    if learning_curve:
        from tunewise.finetune.curve import learning_curve as fit_learning_curve
        from tunewise.ladder.run import task_metric

        curve = fit_learning_curve(_context(task, train, evals, out_dir), task_metric(task))
    if as_json:
        print_json({"adapter": str(outcome.adapter_path), "reused": outcome.reused, "training": s.model_dump(mode="json"),
                    "learning_curve": curve.model_dump(mode="json") if curve else None})
        return
    if outcome.reused:
        console.print("A finished adapter with this data and config exists: reused, nothing trained.", markup=False)
    if s.loss_curve:
        console.print(loss_table(s))
    if s.overfitting_warning:
        console.print(f"Warning: {s.overfitting_warning}", style="yellow", markup=False)
    best = f", best epoch {s.best_epoch:g} kept" if s.best_epoch is not None else ""
    console.print(
        f"{s.method}: {s.train_examples} train / {s.val_examples} validation examples, {s.epochs_run:g} epochs{best}; "
        f"{s.train_tokens:,} tokens at {s.tokens_per_s:,.0f} tokens/s in {s.wall_s:.0f} s on {s.device}"
        f"{' (bf16)' if s.bf16 else ''}, peak memory {s.peak_memory_mb or 0:,.0f} MB",
        markup=False,
    )
    costs = []
    if s.hosted_cost_estimate is not None:
        costs.append(f"hosted ~${s.hosted_cost_estimate:.2f}")
    if s.gpu_cost_estimate is not None:
        costs.append(f"own GPU ~${s.gpu_cost_estimate:.2f}")
    if costs:
        console.print("Training cost at the task's prices: " + ", ".join(costs), markup=False)
    if curve is not None:
        for point in curve.points:
            sc = point.score
            console.print(f"  {point.examples:>6} examples: {sc.value:.3f} [{sc.ci_low:.3f}, {sc.ci_high:.3f}]", markup=False)
        console.print(f"Learning curve: {curve.verdict}", markup=False)
    console.print(f"adapter: {outcome.adapter_path}", markup=False, soft_wrap=True)


def _quiet_transformers() -> None:
    """transformers' own shard and weight-loading bars would interleave with ours."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
