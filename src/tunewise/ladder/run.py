"""Climb the customisation ladder on a task's held-out data and decide.

A run lives in one folder: the resolved config, per-rung predictions (JSONL), per-rung results,
and results.json. Its id is the task name plus a hash of the config and the data, so running the
same task again resumes it: finished rungs are read back, a half-finished rung continues from its
last saved block of predictions, and a trained adapter is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from tunewise.cost.money import fmt_money
from tunewise.data.example import Example
from tunewise.errors import TunewiseError
from tunewise.eval.stats import fmt_p
from tunewise.ladder.results import (
    BreakEven,
    Decision,
    Disagreement,
    Results,
    RungResult,
    TrainingSummary,
    atomic_write_text,
    save_results,
)
from tunewise.ladder.rungs import RUNGS, LadderContext, Prepared, get_rung, rung_title
from tunewise.ladder.scoring import score_predictions
from tunewise.ladder.store import RunStore
from tunewise.models.base import ChatModel
from tunewise.paths import runs_dir
from tunewise.task import Task, task_to_yaml

PROGRESS_FACTORY = Callable[[str, int], Any]  # (description, total) -> context manager yielding advance(n)

# Which rung carries out each approach of the advisor's framework.
APPROACH_TO_RUNG = {
    "prompting": "zero_shot",
    "few_shot": "few_shot",
    "rag": "rag",
    "lora": "lora",
    "full_sft": "lora",
    "finetune_rag": "lora_rag",
}


@dataclass
class RunOptions:
    rungs: list[str] | None = None  # override task.ladder.rungs
    all_rungs: bool = False  # climb every rung, even past a good-enough one
    fresh: bool = False  # new run folder even if this config ran before
    eval_limit: int | None = None
    evidence: bool = True  # learning curve and forgetting check after a fine-tuned rung
    report: bool = True
    out_dir: Path | None = None
    # Injected for tests (a fake or tiny model, a fake embedder); None loads the task's.
    model: ChatModel | None = None
    embedder: Any = None
    retriever: Any = None


@dataclass
class RunState:
    task: Task
    run_id: str
    run_dir: Path
    ctx: LadderContext
    metric: Any
    prepared: dict[str, Prepared] = field(default_factory=dict)
    per_example: dict[str, list[float]] = field(default_factory=dict)
    predictions: dict[str, list[str]] = field(default_factory=dict)
    has_corpus: bool = False


# -- identity and resume ----------------------------------------------------------------------


def _file_digest(path: Path, h: Any) -> None:
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(path)).encode())
                _file_digest(p, h)
        return
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def config_hash(task: Task, options: RunOptions) -> str:
    """Hash of what determines the predictions: config (minus paths) and the data's content.

    Prices, the target, alpha and the list of rungs only change the decision, which every run
    recomputes, so changing them reuses the finished rungs.
    """
    h = hashlib.sha256()
    # Fields left at their defaults are not hashed, so a new task field with a default that keeps
    # today's behaviour does not orphan the runs made before it existed.
    cfg = task.model_dump(mode="json", exclude={"business", "target", "description"}, exclude_defaults=True)
    cfg.setdefault("ladder", {}).pop("rungs", None)
    cfg["ladder"].pop("alpha", None)
    cfg.pop("extra_metrics", None)  # scored from the saved predictions
    for key in ("train", "eval", "file"):
        cfg.setdefault("data", {}).pop(key, None)
    cfg.pop("corpus", None)
    cfg["eval_limit"] = options.eval_limit
    cfg["eval_order"] = "seeded-shuffle"  # predictions saved before eval was shuffled do not line up
    h.update(json.dumps(cfg, sort_keys=True).encode())
    for p in (task.data.train, task.data.eval, task.data.file, task.corpus):
        if p is not None:
            _file_digest(p, h)
    return h.hexdigest()[:10]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a torn last line (crash mid-write) is dropped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def _append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def predict_resumable(
    name: str,
    prepared: Prepared,
    examples: list[Example],
    run_dir: Path,
    max_new_tokens: int,
    block_size: int,
    advance: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Generate for every example, saving each finished block so an interrupted run continues."""
    folder = run_dir / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{name}.partial.jsonl"
    rows = _read_jsonl(partial)[: len(examples)]
    if rows and advance:
        advance(len(rows))
    for start in range(len(rows), len(examples), block_size):
        block = examples[start : start + block_size]
        requests = [prepared.build(ex.messages) for ex in block]
        generations = prepared.model.generate([r.messages for r in requests], max_new_tokens, advance)
        new = [
            {
                "index": start + i,
                "prediction": g.text,
                "prompt_tokens": g.prompt_tokens,
                "output_tokens": g.output_tokens,
                "latency_s": g.latency_s,
                "retrieved_ids": r.retrieved_ids,
            }
            for i, (r, g) in enumerate(zip(requests, generations))
        ]
        _append_jsonl(partial, new)
        rows += new
    return rows


def single_request_latencies(prepared: Prepared, examples: list[Example], max_new_tokens: int, n: int = 8) -> list[float]:
    """Latency as a user meets it: one request at a time, end to end (retrieval included).

    The ladder's own predictions are generated in batches, where a request's wall time is its
    batch's; timing a few requests alone gives the figure a product team asks about.
    """
    sample = examples[: max(1, min(n, len(examples)))]
    prepared.model.generate([prepared.build(sample[0].messages).messages], max_new_tokens)  # warm-up
    out = []
    for ex in sample:
        start = time.perf_counter()
        prepared.model.generate([prepared.build(ex.messages).messages], max_new_tokens)
        out.append(time.perf_counter() - start)
    return out


# -- costs ------------------------------------------------------------------------------------


def rung_costs(task: Task, prompt_tokens: float, output_tokens: float, finetuned: bool, upfront: float) -> dict[str, float]:
    from tunewise.cost.model import request_cost

    b = task.business
    per_call = request_cost(prompt_tokens, output_tokens, b.pricing, finetuned=finetuned)
    monthly = per_call * b.calls_per_month
    return {
        "cost_per_1k": per_call * 1000,
        "monthly_cost": monthly,
        "upfront_cost": upfront,
        "horizon_cost": upfront + b.horizon_months * monthly,
    }


def estimated_horizon_cost(name: str, state: RunState, done: dict[str, RungResult]) -> float:
    """A lower bound on what an unrun rung would cost, to decide whether climbing can still pay off."""
    task, ctx = state.task, state.ctx
    model = ctx.base_model()
    base = done.get("zero_shot")
    system_tokens = model.count_tokens(ctx.system_prompt or "")
    input_tokens = float(np.mean([model.count_tokens(ex.input_text) for ex in ctx.eval[:50]] or [0]))
    answer_tokens = float(np.mean([model.count_tokens(ex.answer) for ex in ctx.train[:200]] or [0]))
    prompt = base.prompt_tokens if base and base.prompt_tokens else system_tokens + input_tokens
    output = base.output_tokens if base and base.output_tokens else answer_tokens
    rag_tokens = task.ladder.rag.k * task.ladder.rag.chunk_words * 1.0  # >= 1 token a word
    upfront = 0.0
    if name == "few_shot":
        prompt += task.ladder.few_shot.k * (input_tokens + answer_tokens)
    elif name in ("rag", "lora_rag"):
        prompt += rag_tokens
    elif name == "few_shot_rag":
        prompt += rag_tokens + task.ladder.few_shot.k * (input_tokens + answer_tokens)
    if RUNGS[name].trains:
        from tunewise.cost.model import training_cost

        train_tokens = sum(model.count_tokens(ex.input_text) + model.count_tokens(ex.answer) for ex in ctx.train)
        upfront = training_cost(train_tokens, 1, task.business.pricing)
    return rung_costs(task, prompt, output, RUNGS[name].trains, upfront)["horizon_cost"]


# -- the run ----------------------------------------------------------------------------------


def prepare_run(task: Task, options: RunOptions) -> tuple[str, Path]:
    digest = config_hash(task, options)
    run_id = f"{task.name}-{digest}"
    if options.fresh:
        run_id += "-" + datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = (options.out_dir or runs_dir()) / run_id
    return run_id, run_dir


def eval_order(evals: list[Example], seed: int) -> list[Example]:
    """The eval examples in a seeded random order, the order every rung scores them in.

    Adaptive evaluation looks at growing prefixes of this order, and `--limit N` keeps its first N:
    both must be random samples of the eval set even when the file is sorted (by label, by source).
    """
    import random

    order = list(range(len(evals)))
    random.Random(f"eval-order-{seed}").shuffle(order)
    return [evals[i] for i in order]


def _load_examples(task: Task, options: RunOptions) -> tuple[list[Example], list[Example]]:
    from tunewise.data.splits import load_splits

    train, evals = load_splits(task)
    evals = eval_order(evals, task.data.seed)
    limit = options.eval_limit or task.ladder.eval_limit
    if limit:
        evals = evals[:limit]
    if not evals:
        raise TunewiseError("the eval split is empty: give `data.eval` or a larger `data.eval_fraction`")
    return train, evals


def _context(task: Task, train: list[Example], evals: list[Example], run_dir: Path, options: RunOptions) -> LadderContext:
    cache: dict[str, Any] = {}

    def base_model() -> ChatModel:
        if "model" not in cache:
            if options.model is not None:
                cache["model"] = options.model
            else:
                from tunewise.models.resolve import load_model

                opts = task.model_options.model_dump(exclude_none=True)
                if not task.model.startswith("openai:") and "base_url" not in opts:
                    opts["max_batch_size"] = task.ladder.batch_size
                cache["model"] = load_model(task.model, **opts)
        return cache["model"]

    def embedder() -> Any:
        if "embedder" not in cache:
            if options.embedder is not None:
                cache["embedder"] = options.embedder
            else:
                from tunewise.retrieval.embed import load_embedder

                cache["embedder"] = load_embedder()
        return cache["embedder"]

    def retriever() -> Any:
        if "retriever" not in cache:
            if options.retriever is not None:
                cache["retriever"] = options.retriever
            else:
                if task.corpus is None:
                    raise TunewiseError("this rung needs a knowledge corpus: set `corpus:` in the task file")
                from tunewise.retrieval.index import build_retriever

                cache["retriever"] = build_retriever(task, embedder=embedder())
        return cache["retriever"]

    return LadderContext(task, train, evals, run_dir, base_model, retriever, embedder, seed=task.data.seed)


def _audit_summary(task: Task) -> dict[str, Any] | None:
    try:
        from tunewise.data.audit import audit
    except ImportError:
        return None
    if task.data.file is not None:
        report = audit(task.data.file, None, format=task.data.format)
    else:
        report = audit(task.data.train, task.data.eval, format=task.data.format)
    return report.summary()


def _advice(task: Task, n_train: int) -> dict[str, Any] | None:
    try:
        from tunewise.advise import advise, situation_from_task
    except ImportError:
        return None
    return advise(situation_from_task(task, n_examples=n_train)).to_dict()


def run_rung(state: RunState, name: str, progress: PROGRESS_FACTORY) -> RungResult:
    task, ctx = state.task, state.ctx
    rung = get_rung(name)
    title = rung_title(name, task)
    if rung.needs_corpus and not state.has_corpus:
        return RungResult(name=name, title=title, status="skipped", note="no knowledge corpus: set `corpus:` in the task file")
    prepared = rung.prepare(ctx)
    state.prepared[name] = prepared
    with progress(f"{title}", len(ctx.eval)) as advance:
        rows = predict_resumable(
            name, prepared, ctx.eval, state.run_dir, task.ladder.max_new_tokens, 4 * task.ladder.batch_size, advance
        )
    predictions = [r["prediction"] for r in rows]
    score, per_example = score_predictions(state.metric, predictions, ctx.eval, seed=task.data.seed)
    state.per_example[name], state.predictions[name] = per_example, predictions

    latencies = single_request_latencies(prepared, ctx.eval, task.ladder.max_new_tokens)
    prompt_tokens = float(np.mean([r["prompt_tokens"] for r in rows]))
    output_tokens = float(np.mean([r["output_tokens"] for r in rows]))
    costs = rung_costs(task, prompt_tokens, output_tokens, prepared.finetuned, prepared.upfront_cost)

    recall = None
    if any(ex.source_id for ex in ctx.eval) and any(r["retrieved_ids"] for r in rows):
        from tunewise.retrieval.index import recall_at_k

        recall = recall_at_k([r["retrieved_ids"] for r in rows], [ex.source_id for ex in ctx.eval])

    final = state.run_dir / "predictions" / f"{name}.jsonl"
    atomic_write_text(
        final,
        "".join(
            json.dumps(
                {**row, "input": ex.input_text, "gold": ex.answer, "score": s}, ensure_ascii=False
            )
            + "\n"
            for row, ex, s in zip(rows, ctx.eval, per_example)
        ),
    )
    training = prepared.details.get("training")
    if isinstance(training, dict):
        training = TrainingSummary.model_validate(training)
    return RungResult(
        name=name,
        title=title,
        finetuned=prepared.finetuned,
        score=score,
        latency_p50_s=float(np.percentile(latencies, 50)),
        latency_p95_s=float(np.percentile(latencies, 95)),
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        retrieval_recall=recall,
        predictions_file=str(final.relative_to(state.run_dir)),
        training=training,
        **costs,
    )


def task_metric(task: Task, name: str | None = None) -> Any:
    """The task's metric with its options, or another registered or custom one by name (no options);
    a relative custom path is relative to the task file."""
    from tunewise.eval.metrics import get_metric

    name = name or task.metric
    options = task.metric_options if name == task.metric else {}
    return get_metric(name, base_dir=task.path.parent if task.path else None, **options)


def extra_metrics(task: Task) -> list[Any]:
    """The metrics reported beside the task's own: its companions unless the task lists them."""
    from tunewise.eval.metrics import secondary_metrics

    names = secondary_metrics(task.metric) if task.extra_metrics is None else task.extra_metrics
    try:
        return [task_metric(task, name) for name in names if name != task.metric]
    except TunewiseError as err:
        raise TunewiseError(f"extra_metrics: {err}") from None


def score_extra_metrics(state: RunState, results: list[RungResult], metrics: list[Any], log: Callable[[str], None] = print) -> None:
    """Score each finished rung's saved predictions with the extra metrics (value and 95% CI).

    They are reported only, so a metric that cannot score this data is left out with a line saying
    why, and the run still decides.
    """
    done = [r for r in results if r.status == "done" and r.name in state.predictions]
    for r in results:
        r.extra_scores = {}
    for metric in metrics:
        try:
            scores = {r.name: score_predictions(metric, state.predictions[r.name], state.ctx.eval, seed=state.task.data.seed)[0] for r in done}
        except TunewiseError as err:
            log(f"extra metric {metric.name} left out: {err}")
            continue
        for r in done:
            r.extra_scores[metric.name] = scores[r.name]


def compare_rungs(state: RunState, results: list[RungResult], alpha: float) -> None:
    """p-values against the best rung and the previous rung, on the same examples."""
    from tunewise.eval.stats import compare, compare_predictions

    done = [r for r in results if r.status == "done" and r.score is not None]
    if not done:
        return
    best = max(done, key=lambda r: r.score.value)
    binary = bool(getattr(state.metric, "binary", False))
    corpus_level = state.metric.corpus is not None

    def p_value(a: str, b: str) -> float:
        if corpus_level:  # e.g. macro-F1: recompute the metric on every resample, not per-example means
            return compare_predictions(state.metric, state.predictions[a], state.predictions[b], state.ctx.eval, seed=state.ctx.seed).p_value
        return compare(state.per_example[a], state.per_example[b], binary, seed=state.ctx.seed).p_value

    previous: RungResult | None = None
    for r in done:
        if r is best:
            r.p_value_vs_best, r.significantly_worse_than_best = None, False
        else:
            r.p_value_vs_best = p_value(r.name, best.name)
            r.significantly_worse_than_best = r.p_value_vs_best < alpha and r.score.value < best.score.value
        if previous is not None:
            r.p_value_vs_previous = p_value(r.name, previous.name)
        if r.name != "zero_shot" and "zero_shot" in state.per_example:
            r.p_value_vs_zero_shot = p_value(r.name, "zero_shot")
        if state.task.target is not None:
            r.meets_target = r.score.value >= state.task.target
        previous = r


def decide(task: Task, results: list[RungResult], advice: dict[str, Any] | None) -> Decision:
    done = [r for r in results if r.status == "done" and r.score is not None]
    if not done:
        return Decision(rung=None, sentence="No rung finished, so there is nothing to decide.", reasons=[])
    best = max(done, key=lambda r: r.score.value)
    not_worse = [r for r in done if not r.significantly_worse_than_best]
    good = [r for r in not_worse if r.meets_target is not False]
    cheapest = lambda rs: min(rs, key=lambda r: (r.horizon_cost or 0.0, -r.score.value))  # noqa: E731
    b = task.business
    reasons = []
    metric = task.metric
    if good:
        choice = cheapest(good)
        sentence = (
            f"Use {choice.title}: {metric} {choice.score.value:.3f} "
            f"[{choice.score.ci_low:.3f}, {choice.score.ci_high:.3f}]"
        )
        if choice is best:
            sentence += " is the best measured"
        else:
            sentence += f" is not measurably worse than the best ({best.title}, {best.score.value:.3f}, {fmt_p(choice.p_value_vs_best)})"
        sentence += f", and it is the cheapest such option at {b.calls_per_month:,} calls/month ({fmt_money(choice.monthly_cost or 0)}/month"
        sentence += f" + {fmt_money(choice.upfront_cost)} one-off)." if choice.upfront_cost else ")."
        if task.target is not None:
            reasons.append(f"{choice.title} meets the target {task.target} ({choice.score.value:.3f}).")
    else:
        choice = cheapest(not_worse)
        sentence = (
            f"No rung reaches the target {task.target}: the best is {best.title} at {best.score.value:.3f} "
            f"[{best.score.ci_low:.3f}, {best.score.ci_high:.3f}]; "
            f"{'it' if choice is best else choice.title + ', not measurably worse and cheaper,'} is the closest option. "
            "Collect more data, try a stronger model, or revisit the target."
        )
    for r in done:
        if r is choice:
            continue
        if r.significantly_worse_than_best:
            reasons.append(f"{r.title} scores {r.score.value:.3f}, measurably worse than {best.title} ({fmt_p(r.p_value_vs_best)}).")
        elif r.meets_target is False:
            reasons.append(f"{r.title} scores {r.score.value:.3f}, below the target {task.target}.")
        elif (r.horizon_cost or 0) > (choice.horizon_cost or 0):
            reasons.append(
                f"{r.title} is as good ({r.score.value:.3f}) but costs more: {fmt_money(r.horizon_cost or 0)} "
                f"vs {fmt_money(choice.horizon_cost or 0)} over {b.horizon_months} months."
            )
    for r in results:
        if r.status != "done":
            reasons.append(f"{r.title} was {r.status}: {r.note}")

    approach, rules, agreement, kind = None, [], None, None
    if advice:
        approach = advice.get("approach")
        rules = [f"{f['id']}: {f['reason']}" for f in advice.get("rules", [])]
        advised_rung = APPROACH_TO_RUNG.get(approach or "")
        if advised_rung is None:
            kind = "unmeasured"
            agreement = f"The framework recommends {approach}, which the ladder does not measure directly."
        elif advised_rung == choice.name or (advised_rung == "rag" and choice.name == "few_shot_rag"):
            kind = "agree"
            agreement = f"Measurement and the framework agree: {choice.title}."
        else:
            kind = "disagree"
            measured = next((r for r in done if r.name == advised_rung), None)
            what = (
                f"it scored {measured.score.value:.3f} here" if measured else "it was not measured in this run"
            )
            agreement = (
                f"Measurement and the framework disagree: the rules suggest {approach} ({what}); "
                f"the evidence on your data favours {choice.title}."
            )
    return Decision(
        rung=choice.name,
        sentence=sentence,
        reasons=reasons,
        advisor_approach=approach,
        advisor_rules=rules,
        agreement=agreement,
        agreement_kind=kind,
    )


def break_evens(task: Task, results: list[RungResult]) -> list[BreakEven]:
    from tunewise.cost.model import break_even_calls_per_month

    done = [r for r in results if r.status == "done" and r.cost_per_1k is not None]
    out = []
    for a in done:
        for b in done:
            if a.upfront_cost < b.upfront_cost and a.name != b.name:
                calls = break_even_calls_per_month(
                    a.upfront_cost, a.cost_per_1k / 1000, b.upfront_cost, b.cost_per_1k / 1000, task.business.horizon_months
                )
                out.append(BreakEven(cheaper_upfront=a.name, cheaper_per_call=b.name, calls_per_month=calls))
    return out


def disagreements(state: RunState, results: list[RungResult], limit: int = 50) -> list[Disagreement]:
    names = [r.name for r in results if r.status == "done" and r.name in state.per_example]
    if len(names) < 2:
        return []
    out = []
    for i, ex in enumerate(state.ctx.eval):
        scores = {n: state.per_example[n][i] for n in names}
        if max(scores.values()) - min(scores.values()) > 1e-9:
            out.append(
                Disagreement(
                    index=i,
                    input=ex.input_text,
                    gold=ex.answer,
                    answers={n: state.predictions[n][i] for n in names},
                    scores=scores,
                )
            )
    # The examples where the most rungs fail first: they teach the most.
    out.sort(key=lambda d: sum(d.scores.values()))
    return out[:limit]


def _evidence(state: RunState, results: Results, progress: PROGRESS_FACTORY) -> None:
    """Learning curve and forgetting check for the fine-tuned rung (cached in the run folder)."""
    ft = next((r.name for r in results.rungs if r.status == "done" and r.finetuned), None)
    if ft is None:
        return
    if ft not in state.prepared:  # finished in an earlier session: the adapter on disk is reused
        state.prepared[ft] = get_rung(ft).prepare(state.ctx)
    from tunewise.ladder.results import Forgetting, LearningCurve

    folder = state.run_dir / "evidence"
    curve_file, forget_file = folder / "learning_curve.json", folder / "forgetting.json"
    if curve_file.exists():
        results.learning_curve = LearningCurve.model_validate_json(curve_file.read_text())
    else:
        from tunewise.finetune.curve import learning_curve

        results.learning_curve = learning_curve(state.ctx, state.metric)
        atomic_write_text(curve_file, results.learning_curve.model_dump_json(indent=2))
    if forget_file.exists():
        results.forgetting = Forgetting.model_validate_json(forget_file.read_text())
    else:
        from tunewise.finetune.forgetting import forgetting_check
        from tunewise.ladder.rungs import zero_shot

        base = state.prepared.get("zero_shot") or zero_shot(state.ctx)
        results.forgetting = forgetting_check(state.ctx, base, state.prepared[ft])
        atomic_write_text(forget_file, results.forgetting.model_dump_json(indent=2))


def run_ladder(task: Task, options: RunOptions | None = None, progress: PROGRESS_FACTORY | None = None, log: Callable[[str], None] = print) -> Results:
    from tunewise.ui import progress_bar

    options = options or RunOptions()
    progress = progress or progress_bar
    started = time.perf_counter()
    metric = task_metric(task)
    has_corpus = task.corpus is not None or options.retriever is not None
    if options.rungs:
        names = options.rungs
    elif options.all_rungs:  # every rung that applies; a listed rung that cannot run is shown as skipped
        names = [n for n, r in RUNGS.items() if has_corpus or not r.needs_corpus or n in task.ladder.rungs]
    else:
        names = task.ladder.rungs
    extra = extra_metrics(task)
    for n in names:
        get_rung(n)  # unknown names fail before any work

    train, evals = _load_examples(task, options)
    run_id, run_dir = prepare_run(task, options)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", task_to_yaml(task))
    store = RunStore()
    store.start(run_id, task.name, run_dir.resolve(), task.model, task.metric, run_id.split("-")[-1])
    log(f"run {run_id}: {len(train)} train / {len(evals)} eval examples -> {run_dir}")

    ctx = _context(task, train, evals, run_dir, options)
    state = RunState(task, run_id, run_dir, ctx, metric, has_corpus=has_corpus)
    results = Results(
        run_id=run_id,
        task=task.name,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model=task.model if options.model is None else options.model.name,
        metric=task.metric,
        target=task.target,
        eval_examples=len(evals),
        train_examples=len(train),
        calls_per_month=task.business.calls_per_month,
        horizon_months=task.business.horizon_months,
        audit=_audit_summary(task),
        advice=_advice(task, len(train)),
    )
    rung_dir = run_dir / "rungs"
    status = "interrupted"
    try:
        done: dict[str, RungResult] = {}
        for i, name in enumerate(names):
            cached = rung_dir / f"{name}.json"
            good = [r for r in done.values() if r.status == "done" and r.meets_target]
            if good and not options.all_rungs:
                best_cost = min(r.horizon_cost or 0 for r in good)
                estimates = {n: estimated_horizon_cost(n, state, done) for n in names[i:]}
                if min(estimates.values()) >= best_cost:
                    for n in names[i:]:
                        done[n] = RungResult(
                            name=n,
                            title=rung_title(n, task),
                            status="skipped",
                            note=f"a cheaper rung already meets the target; this one would cost at least "
                            f"{fmt_money(estimates[n])} over {task.business.horizon_months} months "
                            "(use --all to measure it anyway)",
                        )
                    break
            if cached.exists():
                result = RungResult.model_validate_json(cached.read_text())
                if result.status == "done":
                    _restore(state, name, result)
                log(f"{result.title}: finished earlier, read from {cached.relative_to(run_dir)}")
            else:
                result = run_rung(state, name, progress)
                atomic_write_text(cached, result.model_dump_json(indent=2))
            done[name] = result
            store.record_rung(run_id, name, result.status, result.score.value if result.score else None)
            if task.target is not None and result.score is not None:
                result.meets_target = result.score.value >= task.target
            results.rungs = list(done.values())
            save_results(results, run_dir)
        results.rungs = list(done.values())

        compare_rungs(state, results.rungs, task.ladder.alpha)
        score_extra_metrics(state, results.rungs, extra, log)
        results.decision = decide(task, results.rungs, results.advice)
        results.break_even = break_evens(task, results.rungs)
        results.disagreements = disagreements(state, results.rungs)
        if options.evidence:
            _evidence(state, results, progress)
        results.wall_s = time.perf_counter() - started
        save_results(results, run_dir)
        if options.report:
            try:
                from tunewise.report.render import render_report
            except ImportError:
                pass
            else:
                render_report(results, run_dir)
        status = "finished"
    except BaseException:
        status = "interrupted"
        raise
    finally:
        store.finish(run_id, status, results.decision.model_dump() if results.decision else None)
        store.close()
    return results


def _restore(state: RunState, name: str, result: RungResult) -> None:
    """Read a finished rung's predictions back so comparisons and evidence can use them."""
    rows = _read_jsonl(state.run_dir / (result.predictions_file or f"predictions/{name}.jsonl"))
    state.predictions[name] = [r["prediction"] for r in rows]
    state.per_example[name] = [r["score"] for r in rows]


def open_run(run_dir: Path | str, options: RunOptions | None = None) -> tuple[Task, LadderContext, Results]:
    """A finished run's task, a fresh context over its data, and its results (for serve and export).

    The config saved in the run folder is the source of truth, so a run can be served or exported
    after the original task file moved or changed.
    """
    import yaml

    from tunewise.ladder.results import load_results
    from tunewise.task import parse_task

    run_dir = Path(run_dir)
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise TunewiseError(f"{run_dir} is not a run folder (no config.yaml); list runs with `tunewise runs`")
    task = parse_task(yaml.safe_load(config.read_text(encoding="utf-8")), config)
    results = load_results(run_dir)
    options = options or RunOptions()
    train, evals = _load_examples(task, options)
    return task, _context(task, train, evals, run_dir, options), results
