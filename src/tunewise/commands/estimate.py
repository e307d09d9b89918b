"""`tunewise estimate [TASK.yaml]`: what each approach costs, where fine-tuning pays off, and the GPU
memory and time a fine-tune needs. Instant: no model is loaded."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import click
from pydantic import ValidationError
from rich import box
from rich.table import Table

from tunewise.cost.memory import (
    EMBEDDED_PARAMS,
    memory_by_method,
    params_from_model_name,
    parse_param_count,
    training_flops,
    training_time_estimate,
)
from tunewise.cost.model import HOURS_PER_MONTH, Estimate, Workload, estimate, measure_task, training_time_s
from tunewise.cost.money import fmt_money
from tunewise.errors import TunewiseError
from tunewise.task import Pricing, load_task
from tunewise.ui import console, print_json

# flag -> Workload field
WORKLOAD_FLAGS = {
    "calls_per_month": "calls_per_month",
    "horizon_months": "horizon_months",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "system_tokens": "system_tokens",
    "examples": "train_examples",
    "few_shot_k": "few_shot_k",
    "example_tokens": "example_tokens",
    "rag_k": "rag_k",
    "chunk_tokens": "chunk_tokens",
    "train_tokens": "train_tokens_per_example",
    "epochs": "epochs",
}
# flag -> Pricing field
PRICE_FLAGS = {
    "input_price": "input_per_1m",
    "output_price": "output_per_1m",
    "ft_input_price": "finetuned_input_per_1m",
    "ft_output_price": "finetuned_output_per_1m",
    "train_price": "training_per_1m",
    "gpu_hourly": "gpu_hourly",
}
DEFAULT_GPU_TFLOPS = 312.0  # A100 bf16 dense peak
DEFAULT_SEQ_LEN = 512
DEFAULT_BATCH_SIZE = 8
DEFAULT_LORA_R = 16


class ParamCount(click.ParamType):
    name = "COUNT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            return parse_param_count(value)
        except TunewiseError as err:
            self.fail(str(err), param, ctx)


def _gb(x: float) -> str:
    return f"{x:,.1f}" if x >= 10 else f"{x:.2f}"


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _pricing(base: Pricing, flags: dict[str, Any]) -> Pricing:
    given = {field: flags[flag] for flag, field in PRICE_FLAGS.items() if flags[flag] is not None}
    raw = base.model_dump()
    if "gpu_hourly" in given and "input_per_1m" not in given and "output_per_1m" not in given:
        raw.update(input_per_1m=None, output_per_1m=None)  # --gpu-hourly alone means: self-host
    raw.update(given)
    try:
        return Pricing.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
        raise click.UsageError(f"prices: {problems} (use --input-price/--output-price or --gpu-hourly)") from None


def _memory_and_time(est: Estimate, params: int, label: str, options: dict[str, Any]) -> dict[str, Any]:
    memory = memory_by_method(
        params,
        options["seq_len"],
        options["batch_size"],
        lora_r=options["lora_r"],
        gradient_checkpointing=options["gradient_checkpointing"],
    )
    tokens = est.train_tokens_per_epoch * est.epochs
    pricing = est.workload.pricing
    return {
        "memory": {"params": params, "model": label, **options, "methods": memory},
        "training_time": {
            "tokens": tokens,
            "flops": training_flops(params, tokens),
            "gpu_tflops": options["gpu_tflops"],
            "mfu": options["mfu"],
            "seconds_at_flops": training_time_estimate(params, tokens, options["gpu_tflops"], options["mfu"]),
            "tokens_per_s": pricing.gpu_training_tokens_per_s,
            "seconds_at_throughput": training_time_s(tokens, 1, pricing.gpu_training_tokens_per_s),
        },
    }


def _say(text: str) -> None:
    # Soft wrap: a sentence stays one line in logs and pipes (rich would cut it at 80 columns).
    console.print(text, soft_wrap=True)


def _render(est: Estimate, extra: dict[str, Any], source: str) -> None:
    w = est.workload
    pricing = w.pricing
    priced = f"self-hosted at ${pricing.gpu_hourly:g}/GPU-hour" if pricing.self_hosted else "hosted API prices"
    _say(f"[bold]Cost estimate[/bold] ({source}; {priced})")
    _say(
        f"  tokens per request: system {w.system_tokens:.0f}, input {w.input_tokens:.0f}, output {w.output_tokens:.0f}; "
        f"few-shot k={w.few_shot_k} x {w.resolved_example_tokens:.0f}; RAG k={w.rag_k} x {w.chunk_tokens:.0f}"
    )
    _say(
        f"  training: {w.train_examples:,} examples x {w.resolved_train_tokens_per_example:.0f} tokens x "
        f"{est.epochs} epoch(s) = {est.train_tokens_per_epoch * est.epochs:,.0f} tokens"
    )
    table = Table(title=f"{w.calls_per_month:,.0f} calls/month, {w.horizon_months:g}-month horizon", box=box.SIMPLE_HEAD)
    table.add_column("approach", overflow="fold")
    for col in ("tok in/out", "$/1k req", "$/month", "one-off", f"{w.horizon_months:g}-mo total"):
        table.add_column(col, justify="right", overflow="fold")
    for a in est.approaches:
        table.add_row(
            a.title,
            f"{a.prompt_tokens:.0f}/{a.output_tokens:.0f}",
            fmt_money(a.cost_per_1k),
            fmt_money(a.monthly_cost),
            fmt_money(a.upfront_cost) if a.upfront_cost else "-",
            fmt_money(a.horizon_cost),
        )
    console.print(table)
    for point in est.break_even:
        expected = ""
        if point.calls_per_month:
            verdict = "it does" if w.calls_per_month > point.calls_per_month else "it does not"
            expected = f"; at your {w.calls_per_month:,.0f} calls/month {verdict}"
        _say(f"  break-even: {point.sentence}{expected}")
    if pricing.self_hosted:
        _say(
            f"  [dim]self-hosting figures bill only busy GPU time (a saturated GPU); one GPU always on "
            f"costs {fmt_money(pricing.gpu_hourly * HOURS_PER_MONTH)}/month[/dim]"
        )

    mem = extra["memory"]
    title = (
        f"GPU memory to fine-tune {mem['model']} (seq {mem['seq_len']}, batch {mem['batch_size']}, "
        f"LoRA r={mem['lora_r']}{', checkpointing' if mem['gradient_checkpointing'] else ''}), GB"
    )
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for col in ("method", "trainable", "weights", "grads", "optimizer", "activations", "total"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for method, m in mem["methods"].items():
        cells = [_gb(m[k]) for k in ("weights", "gradients", "optimizer", "activations")]
        table.add_row(method, f"{m['trainable_params'] / 1e6:,.1f}M", *cells, f"[bold]{_gb(m['total'])}[/bold]")
    console.print(table)
    t = extra["training_time"]
    _say(
        f"  training time: {t['flops']:.3g} FLOPs (6 x params x tokens) -> {_duration(t['seconds_at_flops'])} "
        f"at {t['gpu_tflops']:g} TFLOPS x {t['mfu']:.0%} MFU; {_duration(t['seconds_at_throughput'])} "
        f"at {t['tokens_per_s']:,.0f} tokens/s (pricing.gpu_training_tokens_per_s)"
    )


NUMBER = click.FloatRange(min=0)
COUNT = click.IntRange(min=0)
POSITIVE_COUNT = click.IntRange(min=1)


@click.command("estimate")
@click.argument("task_file", metavar="[TASK.yaml]", required=False, type=click.Path(dir_okay=False))
@click.option("--calls-per-month", type=COUNT, help="Expected requests per month.")
@click.option("--horizon-months", type=POSITIVE_COUNT, help="Months to amortise training over.")
@click.option("--input-tokens", type=NUMBER, help="Mean tokens of the user's message(s).")
@click.option("--output-tokens", type=NUMBER, help="Mean tokens of an answer.")
@click.option("--system-tokens", type=NUMBER, help="Tokens of the system prompt.")
@click.option("--examples", type=POSITIVE_COUNT, help="Training examples.")
@click.option("--few-shot-k", type=COUNT, help="Examples shown by few-shot (0 leaves it out).")
@click.option("--example-tokens", type=NUMBER, help="Tokens of one shown example (default input + output).")
@click.option("--rag-k", type=COUNT, help="Chunks retrieved by RAG (0 leaves RAG out).")
@click.option("--chunk-tokens", type=NUMBER, help="Tokens of one retrieved chunk.")
@click.option("--train-tokens", type=NUMBER, help="Tokens billed per training example (default: measured/derived).")
@click.option("--epochs", type=POSITIVE_COUNT, help="Training epochs (default: the task's, else OpenAI's rule).")
@click.option("--input-price", type=NUMBER, help="$ per 1M prompt tokens, base model.")
@click.option("--output-price", type=NUMBER, help="$ per 1M output tokens, base model.")
@click.option("--ft-input-price", type=NUMBER, help="$ per 1M prompt tokens, fine-tuned model.")
@click.option("--ft-output-price", type=NUMBER, help="$ per 1M output tokens, fine-tuned model.")
@click.option("--train-price", type=NUMBER, help="$ per 1M training tokens (hosted fine-tuning).")
@click.option("--gpu-hourly", type=NUMBER, help="Self-host at this $/GPU-hour (drops hosted prices unless given).")
@click.option(
    "--params",
    type=ParamCount(),
    help="Model size for the memory table: 135M, 1.5B, 7B (default: from the task's model name, else 135M).",
)
@click.option("--seq-len", type=POSITIVE_COUNT, help="Training sequence length (default: task's max_length, else 512).")
@click.option("--batch-size", type=POSITIVE_COUNT, help="Training batch size (default: task's, else 8).")
@click.option("--lora-r", type=POSITIVE_COUNT, help="LoRA rank (default: task's, else 16).")
@click.option("--gradient-checkpointing", is_flag=True, help="Memory with activation recomputation.")
@click.option(
    "--gpu-tflops",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_GPU_TFLOPS,
    show_default=True,
    help="GPU peak dense bf16 TFLOPS (312: A100; 989: H100 SXM).",
)
@click.option(
    "--mfu", type=click.FloatRange(0, 1, min_open=True), default=0.4, show_default=True, help="Model FLOPs utilisation."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def command(task_file: str | None, as_json: bool, **flags: Any) -> None:
    """Cost of zero-shot, few-shot, RAG and fine-tuning per request, per month and over the horizon;
    the volume where fine-tuning pays off; GPU memory and time to fine-tune.

    With TASK.yaml, token counts are measured from its data and prices come from its `business`
    section; every flag overrides. Formulas: docs/cost.md.
    """
    task = load_task(task_file) if task_file else None
    workload = measure_task(task) if task else Workload()
    overrides = {field: flags[flag] for flag, field in WORKLOAD_FLAGS.items() if flags[flag] is not None}
    workload = replace(workload, **overrides, pricing=_pricing(workload.pricing, flags))
    from tunewise.rungs import RUNGS

    est = estimate(workload, RUNGS.values())

    params = flags["params"] or (params_from_model_name(task.model) if task else None)
    if params is None:
        params, label = round(EMBEDDED_PARAMS), "SmolLM2-135M (the embedded model; --params for another size)"
    else:
        label = f"{params / 1e9:g}B params" if params >= 1e9 else f"{params / 1e6:g}M params"
    options = {
        "seq_len": flags["seq_len"] or (task.train.max_length if task else DEFAULT_SEQ_LEN),
        "batch_size": flags["batch_size"] or (task.train.batch_size if task else DEFAULT_BATCH_SIZE),
        "lora_r": flags["lora_r"] or (task.train.lora.r if task else DEFAULT_LORA_R),
        "gradient_checkpointing": flags["gradient_checkpointing"],
        "gpu_tflops": flags["gpu_tflops"],
        "mfu": flags["mfu"],
    }
    extra = _memory_and_time(est, params, label, options)
    source = f"task {task.name}, tokens measured (~4 characters a token)" if task else "figures from flags and defaults"
    if as_json:
        print_json({"source": source, **est.to_dict(), **extra})
    else:
        _render(est, extra, source)
