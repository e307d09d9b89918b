"""Quantized rungs: the same model with quantized weights (models/quantize.py), one rung per method:
quantized_bf16, quantized_int8 (dynamic) and quantized_int8_weight (weight-only) on CPU,
quantized_int8_cuda and quantized_nf4 (bitsandbytes) on CUDA, and quantized_gguf (llama.cpp). The advisor's "quantize first" rule (approach quantize_distil) points at them.

Quantization changes the weights a rung runs on, not the prompt: each asks its model with the
requests of a prompted rung (`ladder.quantize.prompt`, default zero_shot), so the paired test
against that rung on the unquantized model measures the quantization alone. The rung's facts say
what the weights take in memory, its quality change against that rung when both ran in the run (a
paired test on the same eval examples), its batch throughput and its speed-up. Latency p50/p95 is
timed for every rung by the ladder, interleaved, so the quantized rung and its unquantized twin are
timed under the same load.

Opt-in: they are climbed only when listed (`ladder.rungs` or `--rungs`), not by `--all`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewise.rungs.base import LadderContext, Prepared, Rung
from tunewise.rungs.few_shot import RUNG as FEW_SHOT
from tunewise.rungs.few_shot_rag import RUNG as FEW_SHOT_RAG
from tunewise.rungs.rag import RUNG as RAG
from tunewise.rungs.zero_shot import RUNG as ZERO_SHOT

if TYPE_CHECKING:
    from tunewise.task import Task

PROMPTS: dict[str, Rung] = {r.name: r for r in (ZERO_SHOT, FEW_SHOT, RAG, FEW_SHOT_RAG)}
"""The prompted rungs a quantized model can be asked with (`ladder.quantize.prompt`)."""


def prompt_rung(task: Task) -> Rung:
    return PROMPTS[task.ladder.quantize.prompt]


def quantized(method: str) -> Rung:
    """The rung `quantized_<method>`: `ladder.quantize.prompt`'s requests on the quantized model."""
    from tunewise.models.quantize import METHODS

    label = METHODS[method].label
    name = f"quantized_{method}"

    def prepare(ctx: LadderContext) -> Prepared:
        from tunewise.models.quantize import quantize

        prepared = prompt_rung(ctx.task).prepare(ctx)  # the unquantized rung's requests, on the shared base model
        prepared.model = quantize(prepared.model, method, ctx.task.ladder.quantize.gguf_type)
        prepared.details["quantization"] = prepared.model.quantization
        return prepared

    def describe(task: Task) -> str:
        level = f" {task.ladder.quantize.gguf_type}" if method == "gguf" else ""
        return f"{prompt_rung(task).title(task)}, {label}{level}"

    def unavailable(task: Task) -> str | None:
        from tunewise.models.quantize import method_unavailable

        prompt = prompt_rung(task)
        if prompt.retrieved and task.corpus is None:
            return f"ladder.quantize.prompt is {prompt.name}, which needs a knowledge corpus: set `corpus:` or use zero_shot/few_shot"
        endpoint = task.model.startswith("openai:") or task.model_options.base_url is not None
        return method_unavailable(
            method, task.model, endpoint=endpoint, engine=task.model_options.engine, gguf_type=task.ladder.quantize.gguf_type
        )

    def facts(ctx: LadderContext, prepared: Prepared, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return quantized_facts(ctx, prepared, rows, name)

    return Rung(
        name, f"Quantized, {label}", prepare, approaches=("quantize_distil",), opt_in=True,
        describe=describe, unavailable=unavailable, facts=facts,
    )


# -- facts --------------------------------------------------------------------------------------------


def batch_throughput(rows: list[dict[str, Any]]) -> tuple[float, float] | None:
    """(output tokens/s, answers/s) over saved answers, or None without time.

    A batch's answers all carry the batch's wall time as their `latency_s`, so the generation time
    is the sum of the distinct latencies (a one-at-a-time backend has one per answer).

    >>> batch_throughput([{"output_tokens": 3, "latency_s": 0.5}, {"output_tokens": 5, "latency_s": 0.5},
    ...                   {"output_tokens": 2, "latency_s": 1.5}])
    (5.0, 1.5)
    """
    seconds = sum(set(float(r["latency_s"]) for r in rows))
    if not rows or seconds <= 0:
        return None
    return sum(r["output_tokens"] for r in rows) / seconds, len(rows) / seconds


def fmt_mb(mb: float) -> str:
    """Megabytes to a few significant digits.

    >>> fmt_mb(538.06), fmt_mb(12.34), fmt_mb(0.2049)
    ('538 MB', '12.3 MB', '0.205 MB')
    """
    return f"{mb:,.0f} MB" if mb >= 100 else f"{mb:.3g} MB"


def read_scored(path: Path) -> dict[int, dict[str, Any]]:
    """Index -> row of a rung's scored answers (predictions/<name>.jsonl); unreadable lines are left out."""
    rows: dict[int, dict[str, Any]] = {}
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("index"), int) and isinstance(row.get("score"), int | float):
            rows[row["index"]] = row
    return rows


def candidate_name(ctx: LadderContext, rung: str) -> str:
    """`rung` on ctx's model, as results name it."""
    return ctx.task.candidate(rung if ctx.model_key is None else f"{rung}@{ctx.model_key}")


def quantized_facts(ctx: LadderContext, prepared: Prepared, rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """Memory, quality change and speed against the unquantized same-prompt rung of this run."""
    q = prepared.details["quantization"]
    facts: dict[str, Any] = {}
    mb, base_mb = q.weight_bytes / 1e6, q.base_weight_bytes / 1e6
    facts["weights_mb"] = {
        "value": round(mb, 3),
        "text": f"weights take {fmt_mb(mb)} ({q.label}) against {fmt_mb(base_mb)} unquantized ({mb / base_mb:.2f}x)"
        if base_mb else f"weights take {fmt_mb(mb)} ({q.label})",
    }
    own = batch_throughput(rows)
    if own is not None:
        facts["throughput"] = {"value": round(own[0], 2), "text": f"{own[0]:,.1f} output tokens/s ({own[1]:,.2f} answers/s) generating its eval answers"}

    reference = candidate_name(ctx, prompt_rung(ctx.task).name)
    folder = ctx.run_dir / "predictions"
    theirs, mine = read_scored(folder / f"{reference}.jsonl"), read_scored(folder / f"{candidate_name(ctx, name)}.jsonl")
    common = sorted(set(theirs) & set(mine))
    if not common:
        facts["quality_change"] = {
            "value": None,
            "text": f"no quality change measured: {reference} (the same prompt, unquantized) had not run before it in this "
            f"run; list {reference} before {name}",
        }
        return facts
    facts["quality_change"] = quality_change(ctx, [mine[i] for i in common], [theirs[i] for i in common], reference)
    same = sum(mine[i]["prediction"] == theirs[i]["prediction"] for i in common)
    facts["agreement"] = {"value": round(same / len(common), 4), "text": f"the same answer as {reference} on {same} of {len(common)} eval examples"}
    base = batch_throughput([theirs[i] for i in sorted(theirs)])
    if own is not None and base is not None and base[0] > 0:
        facts["speedup"] = {
            "value": round(own[0] / base[0], 3),
            "text": f"{own[0] / base[0]:.2f}x the output tokens/s of {reference} ({base[0]:,.1f}); batch timings, taken "
            "at different times (the latency columns are timed interleaved)",
        }
    return facts


def quality_change(ctx: LadderContext, mine: list[dict[str, Any]], theirs: list[dict[str, Any]], reference: str) -> dict[str, Any]:
    """The metric's paired difference, quantized minus unquantized, with its 95% CI and p-value."""
    from tunewise.eval.metrics import get_metric
    from tunewise.eval.stats import compare, compare_predictions, fmt_p

    task = ctx.task
    metric = get_metric(task.metric, base_dir=task.path.parent if task.path else None, **task.metric_options)
    if metric.corpus is not None:  # e.g. macro-F1: recomputed on every resample
        examples = [ctx.eval[r["index"]] for r in mine]
        c = compare_predictions(metric, [r["prediction"] for r in mine], [r["prediction"] for r in theirs], examples, seed=ctx.seed)
    else:
        c = compare([r["score"] for r in mine], [r["score"] for r in theirs], bool(metric.binary), seed=ctx.seed)
    worse = c.diff < 0 if metric.higher_is_better else c.diff > 0
    if c.diff == 0:
        word = "no change"
    elif c.p_value < task.ladder.alpha:
        word = f"significantly {'worse' if worse else 'better'} at alpha {task.ladder.alpha:g}"
    else:
        word = f"{'worse' if worse else 'better'}, not significant at alpha {task.ladder.alpha:g}"
    return {
        "value": round(c.diff, 4),
        "text": f"{task.metric} {c.diff:+.3f} [{c.diff_ci_low:+.3f}, {c.diff_ci_high:+.3f}] against {reference} unquantized "
        f"({word}; paired {c.method}, {fmt_p(c.p_value)}, {len(mine)} examples)",
    }


QUANTIZED_BF16 = quantized("bf16")
QUANTIZED_INT8 = quantized("int8")
QUANTIZED_INT8_WEIGHT = quantized("int8_weight")
QUANTIZED_INT8_CUDA = quantized("int8_cuda")
QUANTIZED_NF4 = quantized("nf4")
QUANTIZED_GGUF = quantized("gguf")
RUNGS = (QUANTIZED_BF16, QUANTIZED_INT8, QUANTIZED_INT8_WEIGHT, QUANTIZED_INT8_CUDA, QUANTIZED_NF4, QUANTIZED_GGUF)
"""Every quantized rung, in the registry's order."""
