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

from tunewise.cost.model import PREFILL_WEIGHT
from tunewise.cost.money import fmt_money
from tunewise.data.example import Example
from tunewise.decision import direction
from tunewise.decision.direction import best_of, oriented
from tunewise.errors import TunewiseError
from tunewise.eval.stats import fmt_p
from tunewise.ladder.results import (
    BreakEven,
    Decision,
    Disagreement,
    Fact,
    Look,
    Results,
    RungResult,
    TrainingSummary,
    atomic_write_text,
    save_results,
)
from tunewise.ladder.scoring import score_predictions
from tunewise.ladder.store import RunStore
from tunewise.rungs import BASELINE, RUNGS, get_rung, split_candidate
from tunewise.rungs.base import LadderContext, Prepared
from tunewise.models.base import ChatModel
from tunewise.paths import runs_dir
from tunewise.task import Task, task_to_yaml

PROGRESS_FACTORY = Callable[[str, int], Any]  # (description, total) -> context manager yielding advance(n)

LOOKS = (0.25, 0.5, 0.75, 1.0)
"""Adaptive evaluation looks at these shares of the eval set (docs/decision.md)."""
MIN_ADAPTIVE_EXAMPLES = 100
"""Below this many eval examples every rung scores them all: a look at a quarter would say little."""


@dataclass
class RunOptions:
    rungs: list[str] | None = None  # override task.ladder.rungs
    all_rungs: bool = False  # climb every rung, even past a good-enough one
    fresh: bool = False  # new run folder even if this config ran before
    eval_limit: int | None = None
    evidence: bool = True  # learning curve and forgetting check after a fine-tuned rung
    full: bool = False  # score every eval example with every rung (no adaptive stopping)
    report: bool = True
    out_dir: Path | None = None
    # Injected for tests (a fake or tiny model, a fake embedder); None loads the task's.
    model: ChatModel | None = None
    models: dict[str, ChatModel] | None = None  # by `models:` key; a key not given gets `model`, else loads
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
    metric_warnings: dict[str, list[str]] = field(default_factory=dict)  # rung -> what its metric warns (a judge)


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
    for decision_only in ("alpha", "margin", "relative_margin", "adaptive"):
        cfg["ladder"].pop(decision_only, None)
    cfg.pop("extra_metrics", None)  # scored from the saved predictions
    cfg.get("train", {}).pop("checkpoint_every_minutes", None)  # when to save, not what is learnt
    if cfg.get("train") == {}:
        del cfg["train"]  # as if left at its defaults
    for key in ("train", "eval", "file", "unlabelled"):
        cfg.setdefault("data", {}).pop(key, None)
    cfg.pop("corpus", None)
    for entry in (cfg.get("models") or {}).values():
        entry.pop("pricing", None)  # prices change the decision, not the answers
    cfg["eval_limit"] = options.eval_limit
    cfg["eval_order"] = "seeded-shuffle"  # predictions saved before eval was shuffled do not line up
    h.update(json.dumps(cfg, sort_keys=True).encode())
    for p in (task.data.train, task.data.eval, task.data.file, task.corpus, task.data.unlabelled):
        if p is not None:
            _file_digest(p, h)
    return h.hexdigest()[:10]


class DamagedRunError(TunewiseError):
    """A file of a run folder is missing or damaged; the message names it, relative to the folder."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# What a saved answer must hold, checked on every line read back, so a hand-edited or half-written
# row is found here rather than as a KeyError or a length mismatch three functions later.
ANSWER_FIELDS: dict[str, Callable[[Any], bool]] = {
    "index": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "prediction": lambda v: isinstance(v, str),
    "prompt_tokens": _is_number,
    "output_tokens": _is_number,
    "latency_s": _is_number,
    "retrieved_ids": lambda v: v is None or isinstance(v, list),
}
SCORED_FIELDS = {**ANSWER_FIELDS, "score": _is_number}  # predictions/<rung>.jsonl adds input, gold, score


def _read_jsonl(path: Path, fields: dict[str, Callable[[Any], bool]]) -> tuple[list[dict[str, Any]], list[int]]:
    """The sound rows of a JSONL file and the numbers (from 1) of its damaged lines.

    A line is damaged when it is not a JSON object holding every field with a valid value: a torn
    last line from a crash mid-write, or garbage. The lines after a damaged one are still read.
    """
    if not path.exists():
        return [], []
    rows, damaged = [], []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            damaged.append(number)
            continue
        if isinstance(row, dict) and all(k in row and ok(row[k]) for k, ok in fields.items()):
            rows.append(row)
        else:
            damaged.append(number)
    return rows, damaged


def _lines(numbers: list[int]) -> str:
    """How damaged line numbers read in a message (at most five shown).

    >>> _lines([57]), _lines([3, 9])
    ('line 57 is damaged', 'lines 3, 9 are damaged')
    """
    shown = ", ".join(map(str, numbers[:5])) + (f" and {len(numbers) - 5} more" if len(numbers) > 5 else "")
    return f"line {shown} is damaged" if len(numbers) == 1 else f"lines {shown} are damaged"


def answered(result: RungResult, evals: list[Example]) -> int:
    """How many eval examples a finished rung answered: all, unless its evaluation stopped early."""
    return getattr(result, "scored_examples", None) or len(evals)


def read_predictions(run_dir: Path, relative: str, expected: int) -> list[dict[str, Any]]:
    """A finished rung's saved answers, one per eval example in order, or DamagedRunError naming
    what is wrong, e.g. "predictions/lora.jsonl: line 57 is damaged"."""
    path = (run_dir / relative).resolve()
    if not path.is_relative_to(run_dir.resolve()):
        raise DamagedRunError(f"the predictions file {relative!r} lies outside the run folder")
    if not path.is_file():
        raise DamagedRunError(f"{relative} is missing")
    rows, damaged = _read_jsonl(path, SCORED_FIELDS)
    if damaged:
        raise DamagedRunError(f"{relative}: {_lines(damaged)}")
    misplaced = [n + 1 for n, row in enumerate(rows) if row["index"] != n]
    if misplaced:  # a line deleted or moved: later answers would pair with the wrong examples
        raise DamagedRunError(f"{relative}: {_lines(misplaced[:1])} (answer out of place)")
    if len(rows) != expected:
        raise DamagedRunError(f"{relative} holds {len(rows)} answers for {expected} eval examples")
    return rows


def _ends_with_newline(path: Path) -> bool:
    """True for a missing or empty file too: only a last line without its newline needs mending."""
    if not path.exists() or path.stat().st_size == 0:
        return True
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


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
    """Generate for every example, saving each finished block so an interrupted run continues.

    The sound rows of an earlier session are kept, damaged ones (a torn last line, garbage) are
    generated again: a damaged line costs one answer, not every answer after it.
    """
    folder = run_dir / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{name}.partial.jsonl"
    rows, damaged = _read_jsonl(partial, ANSWER_FIELDS)
    kept: dict[int, dict[str, Any]] = {}
    for row in rows:
        if row["index"] < len(examples):
            kept.setdefault(row["index"], row)
    if damaged or len(kept) < len(rows) or not _ends_with_newline(partial):
        # Rewrite the sound rows first, so the next append never lands on the end of a torn line.
        atomic_write_text(partial, "".join(json.dumps(kept[i], ensure_ascii=False) + "\n" for i in sorted(kept)))
    if kept and advance:
        advance(len(kept))
    missing = [i for i in range(len(examples)) if i not in kept]
    for start in range(0, len(missing), block_size):
        indices = missing[start : start + block_size]
        requests = [prepared.build(examples[i].messages) for i in indices]
        generations = prepared.model.generate([r.messages for r in requests], max_new_tokens, advance)
        new = [
            {
                "index": i,
                "prediction": g.text,
                "prompt_tokens": g.prompt_tokens,
                "output_tokens": g.output_tokens,
                "latency_s": g.latency_s,
                "retrieved_ids": r.retrieved_ids,
            }
            for i, r, g in zip(indices, requests, generations)
        ]
        _append_jsonl(partial, new)
        kept.update((row["index"], row) for row in new)
    return [kept[i] for i in range(len(examples))]


def measure_latencies(state: RunState, rungs: list[RungResult], log: Callable[[str], None] = print) -> None:
    """Latency as a user meets it: one request at a time, end to end (retrieval included), for every
    finished rung not yet timed, interleaved across rungs and rotated so that none always goes first.

    The ladder's own answers are generated in batches, where a request's wall time is its batch's.
    Timing single requests in rounds, each round one request a rung, puts every rung under the same
    machine load; the median gets a bootstrap interval, so a noisy figure shows as one.
    """
    from tunewise.eval.stats import bootstrap_ci

    todo = [r for r in rungs if r.status == "done" and r.latency_requests is None]
    if not todo:
        return
    task, ctx = state.task, state.ctx
    from tunewise.ladder.tuning import context_for  # a tuned rung is timed with its chosen knobs

    prepared = {
        r.name: state.prepared.get(r.name) or get_rung(r.name).prepare(context_for(ctx.for_candidate(r.name), r)) for r in todo
    }
    state.prepared.update(prepared)
    examples = ctx.eval[: max(1, min(task.ladder.latency_requests, len(ctx.eval)))]
    log(f"timing {len(examples)} single requests per rung, interleaved: {', '.join(r.title for r in todo)}")
    for p in prepared.values():  # warm-up: first-call allocations are not what a user waits for
        p.model.generate([p.build(examples[0].messages).messages], task.ladder.max_new_tokens)
    names = list(prepared)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i, ex in enumerate(examples):
        turn = i % len(names)
        for name in names[turn:] + names[:turn]:
            start = time.perf_counter()
            prepared[name].model.generate([prepared[name].build(ex.messages).messages], task.ladder.max_new_tokens)
            times[name].append(time.perf_counter() - start)
    for r in todo:
        t = np.asarray(times[r.name])
        r.latency_p50_s, r.latency_p95_s = float(np.percentile(t, 50)), float(np.percentile(t, 95))
        r.latency_p50_ci = bootstrap_ci(t, seed=ctx.seed, statistic=lambda idx, t=t: float(np.median(t[idx])))
        r.latency_requests = len(t)
        # Onto the rung's saved record, which may hold more answers than this verdict showed.
        cached = state.run_dir / "rungs" / f"{r.name}.json"
        saved = RungResult.model_validate_json(cached.read_bytes()) if cached.exists() else r
        fields = ("latency_p50_s", "latency_p95_s", "latency_p50_ci", "latency_requests")
        saved = saved.model_copy(update={f: getattr(r, f) for f in fields})
        atomic_write_text(cached, saved.model_dump_json(indent=2))


# -- costs ------------------------------------------------------------------------------------


def rung_costs(
    task: Task, prompt_tokens: float, output_tokens: float, finetuned: bool, upfront: float, tokens_per_s: float | None = None
) -> dict[str, float]:
    """A candidate's costs at its own model's prices (`task` is that model's view, Task.for_model);
    `tokens_per_s`: the throughput measured for it, used where its prices say `measured`."""
    from tunewise.cost.model import horizon_cost, monthly_cost, request_cost

    b = task.business
    per_call = request_cost(prompt_tokens, output_tokens, b.pricing.with_throughput(tokens_per_s), finetuned=finetuned)
    monthly = monthly_cost(per_call, b.calls_per_month)
    return {
        "cost_per_1k": per_call * 1000,
        "monthly_cost": monthly,
        "upfront_cost": upfront,
        "horizon_cost": horizon_cost(upfront, monthly, b.horizon_months),
    }


def estimated_horizon_cost(name: str, state: RunState, done: dict[str, RungResult]) -> float:
    """A lower bound on what an unrun candidate would cost, to decide whether climbing can still pay
    off: its rung's cost profile (tunewise.rungs) priced at its model's prices."""
    from tunewise.cost.model import approach_prompt_tokens, training_cost

    ctx = state.ctx.for_candidate(name)
    rung, task, model = get_rung(name), ctx.task, ctx.base_model()
    plain = done.get(baseline_of(state, name))
    system_tokens = model.count_tokens(ctx.system_prompt or "")
    input_tokens = float(np.mean([model.count_tokens(ex.input_text) for ex in ctx.eval[:50]] or [0]))
    answer_tokens = float(np.mean([model.count_tokens(ex.answer) for ex in ctx.train[:200]] or [0]))
    prompt = plain.prompt_tokens if plain and plain.prompt_tokens else system_tokens + input_tokens
    output = plain.output_tokens if plain and plain.output_tokens else answer_tokens
    # Extra prompt tokens of the rung's profile, >= 1 token a retrieved word.
    prompt += approach_prompt_tokens(
        0, 0,
        few_shot_k=task.ladder.few_shot.k if rung.shots else 0, example_tokens=input_tokens + answer_tokens,
        retrieved_k=task.ladder.rag.k if rung.retrieved else 0, chunk_tokens=task.ladder.rag.chunk_words,
    )
    upfront = 0.0
    if rung.trains:
        train_tokens = sum(model.count_tokens(ex.input_text) + model.count_tokens(ex.answer) for ex in ctx.train)
        upfront = training_cost(train_tokens, 1, task.business.pricing)  # 0 when training is unpriced
    return rung_costs(task, prompt, output, rung.trains, upfront)["horizon_cost"]


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


def _context(
    task: Task, train: list[Example], evals: list[Example], run_dir: Path, options: RunOptions,
    prepared: dict[str, Prepared] | None = None,
) -> LadderContext:
    """The run's context. `prepared` holds the candidates prepared so far (the ladder's own
    RunState.prepared), so `ctx.candidate` (a distillation teacher) reuses the rung the ladder scored."""
    prepared = {} if prepared is None else prepared
    cache: dict[str, Any] = {}

    def load(key: str | None) -> ChatModel:
        """One of the task's models, loaded once for the whole run (None: the first, or the only one)."""
        key = key or task.default_model_key
        slot = f"model@{key}"
        if slot not in cache:
            if options.models and key in options.models:
                cache[slot] = options.models[key]
            elif options.model is not None:
                cache[slot] = options.model
            else:
                from tunewise.models.resolve import load_model

                entry = task.model_entry(key)
                opts = entry.options.model_dump(exclude_none=True)
                if not entry.is_endpoint:
                    opts["max_batch_size"] = task.ladder.batch_size
                cache[slot] = load_model(entry.model, **opts)
        return cache[slot]

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

    key = task.default_model_key
    ctx = LadderContext(
        task.for_model(key), train, evals, run_dir, lambda: load(key), retriever, embedder, seed=task.data.seed,
        model_key=key, load_model=load,
    )

    def candidate(name: str) -> Prepared:
        """Another candidate, prepared once for the whole run (a distillation teacher, say)."""
        name = task.candidate(name)
        if name not in prepared:
            prepared[name] = get_rung(name).prepare(ctx.for_candidate(name))
        return prepared[name]

    ctx.candidate = candidate
    return ctx


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


def run_rung(
    state: RunState, name: str, progress: PROGRESS_FACTORY, size: int | None = None, previous: RungResult | None = None
) -> RungResult:
    """Score a rung on the first `size` eval examples (all by default), resuming its saved answers.

    `previous` is the same rung's result at an earlier, smaller look: its latency is kept rather
    than timed again.
    """
    ctx = state.ctx.for_candidate(name)
    task, rung = ctx.task, get_rung(name)
    title = candidate_title(state, name, task)
    if (why := skip_reason(state, name)) is not None:
        return RungResult(name=name, title=title, status="skipped", note=why, **model_fields(state, name))
    # Knobs chosen on dev (ladder.tune) before the first eval answer; read back from the run folder
    # at later looks and on resume. Untuned rungs get ctx back unchanged.
    from tunewise.ladder.tuning import tuned_context

    ctx, tuning = tuned_context(ctx, name, state.metric, progress)
    task, title = ctx.task, candidate_title(state, name, ctx.task)
    examples = ctx.eval[: size or len(ctx.eval)]
    prepared = state.prepared.get(name) or rung.prepare(ctx)
    state.prepared[name] = prepared
    started = time.perf_counter()
    with progress(f"{title}", len(examples)) as advance:
        rows = predict_resumable(
            name, prepared, examples, state.run_dir, task.ladder.max_new_tokens, 4 * task.ladder.batch_size, advance
        )
    generation_s = time.perf_counter() - started + ((previous.generation_s or 0.0) if previous else 0.0)
    predictions = [r["prediction"] for r in rows]
    score, per_example = score_predictions(state.metric, predictions, examples, seed=task.data.seed)
    state.per_example[name], state.predictions[name] = per_example, predictions

    kept = previous is not None and previous.latency_requests is not None  # timed once, after the climb
    p50, p95 = (previous.latency_p50_s, previous.latency_p95_s) if kept else (None, None)
    prompt_tokens = float(np.mean([r["prompt_tokens"] for r in rows]))
    output_tokens = float(np.mean([r["output_tokens"] for r in rows]))
    weighted = len(rows) * (PREFILL_WEIGHT * prompt_tokens + output_tokens)  # as the self-hosting price weighs tokens
    tokens_per_s = weighted / generation_s if generation_s > 0 else None
    costs = rung_costs(task, prompt_tokens, output_tokens, prepared.finetuned, prepared.upfront_cost, tokens_per_s)

    recall = None
    if any(ex.source_id for ex in examples) and any(r["retrieved_ids"] for r in rows):
        from tunewise.retrieval.index import recall_at_k

        recall = recall_at_k([r["retrieved_ids"] for r in rows], [ex.source_id for ex in examples])

    final = state.run_dir / "predictions" / f"{name}.jsonl"
    atomic_write_text(
        final,
        "".join(
            json.dumps(
                {**row, "input": ex.input_text, "gold": ex.answer, "score": s}, ensure_ascii=False
            )
            + "\n"
            for row, ex, s in zip(rows, examples, per_example)
        ),
    )
    training = prepared.details.get("training")
    if isinstance(training, dict):
        training = TrainingSummary.model_validate(training)
    facts = rung.facts(ctx, prepared, rows) if rung.facts else {}
    judged, state.metric_warnings[name] = metric_facts(state.metric, predictions, examples)
    facts = {**facts, **judged}
    return RungResult(
        name=name,
        title=title,
        **model_fields(state, name),
        rung_version=rung.version,
        finetuned=prepared.finetuned,
        score=score,
        latency_p50_s=p50,
        latency_p95_s=p95,
        latency_p50_ci=previous.latency_p50_ci if kept else None,
        latency_requests=previous.latency_requests if kept else None,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        retrieval_recall=recall,
        predictions_file=str(final.relative_to(state.run_dir)),
        training=training,
        tuning=tuning,
        facts={k: v if isinstance(v, Fact) else Fact.model_validate(v) for k, v in facts.items()},
        scored_examples=len(examples),
        generation_s=generation_s,
        **costs,
    )


def baseline_of(state: RunState, name: str) -> str:
    """The baseline candidate for `name`: the plain prompt (rungs.BASELINE) on the same model."""
    return state.task.candidate(f"{BASELINE.name}@{state.ctx.for_candidate(name).model_key}" if state.task.models else BASELINE.name)


def candidate_title(state: RunState, name: str, task: Task) -> str:
    """The rung's title with the task's settings, and the model's name when a task has several."""
    title = get_rung(name).title(task)
    key = split_candidate(name)[1]
    return title if key is None else f"{title} on {key}"


def model_fields(state: RunState, name: str) -> dict[str, Any]:
    """The `model` and `pricing` a candidate's result shows: which model, priced how."""
    from tunewise.models.resolve import model_name

    entry = state.task.model_entry(state.ctx.for_candidate(name).model_key)
    return {"model": model_name(entry.model), "pricing": pricing_words(entry.pricing or state.task.business.pricing)}


def pricing_words(pricing: Any) -> str:
    """Prices in a few words, for a table cell.

    >>> from tunewise.task import Pricing
    >>> pricing_words(Pricing())
    'hosted $0.15 in / $0.60 out per 1M'
    >>> pricing_words(Pricing(input_per_1m=None, output_per_1m=None, gpu_hourly=1.2, gpu_inference_tokens_per_s="measured"))
    'self-hosted $1.20/GPU h, measured tokens/s'
    """
    if pricing.self_hosted:
        rate = "measured" if pricing.measured_throughput else f"{pricing.gpu_inference_tokens_per_s:,.0f}"
        return f"self-hosted {fmt_money(pricing.gpu_hourly)}/GPU h, {rate} tokens/s"
    return f"hosted {fmt_money(pricing.input_per_1m)} in / {fmt_money(pricing.output_per_1m)} out per 1M"


def skip_reason(state: RunState, name: str) -> str | None:
    """Why a candidate cannot run on this task, or None: no corpus for a retrieving rung, no constraint
    for a constrained one, or a training rung on a model reached over HTTP."""
    ctx = state.ctx.for_candidate(name)
    rung = get_rung(name)
    if rung.trains and state.task.model_entry(ctx.model_key).is_endpoint:
        return f"{ctx.task.model} is an OpenAI-compatible endpoint: it cannot be trained here"
    return rung.why_not(ctx.task, state.has_corpus)


def task_metric(task: Task, name: str | None = None) -> Any:
    """The task's metric with its options, or another registered or custom one by name (no options);
    a relative custom path is relative to the task file."""
    from tunewise.eval.metrics import get_metric

    name = name or task.metric
    options = dict(task.metric_options) if name == task.metric else {}
    if name == "judge":
        options = judge_options(task, options)
    return get_metric(name, base_dir=task.path.parent if task.path else None, **options)


def judge_options(task: Task, options: dict[str, Any]) -> dict[str, Any]:
    """The judge metric's options with a `models:` name resolved: `judge: large` is that entry's spec,
    endpoint and prices (docs/metrics.md, "judge"). A relative cache_dir is relative to the task file."""
    judge = options.get("judge")
    if isinstance(judge, str) and task.models and judge in task.models:
        entry = task.model_entry(judge)
        options["judge"] = entry.model
        options.setdefault("judge_id", judge)
        for key in ("base_url", "api_key_env"):
            if getattr(entry.options, key) is not None:
                options.setdefault(key, getattr(entry.options, key))
        pricing = entry.pricing or task.business.pricing
        if not pricing.self_hosted:
            options.setdefault("input_per_1m", pricing.input_per_1m)
            options.setdefault("output_per_1m", pricing.output_per_1m)
    cache = options.get("cache_dir")
    if cache is not None and task.path is not None and not Path(cache).is_absolute():
        options["cache_dir"] = str(task.path.parent / cache)
    return options


def distrust(decision: Decision, metric_warnings: dict[str, list[str]]) -> None:
    """A verdict resting on scores the metric itself does not vouch for (a judge that follows the
    position, or whose replies cannot be read) is not one to act on: never confident, and it says so
    first. The scores and their intervals stay as measured."""
    doubted = [name for name, found in metric_warnings.items() if found]
    if not doubted:
        return
    decision.confident = False
    decision.sentence = (
        f"Not a verdict to act on: the metric's own check failed on {len(doubted)} rung(s) (see the warnings), "
        f"so the scores below may not measure quality. As scored: {decision.sentence}"
    )


def metric_facts(metric: Any, predictions: list[str], examples: list[Example]) -> tuple[dict[str, Fact], list[str]]:
    """What a metric says about its own scores on one rung (a judge: its consistency, unparsable
    replies, tokens and agreement with chrF), as facts, and its warnings."""
    report = metric.judge_report(predictions, examples) if callable(getattr(metric, "judge_report", None)) else None
    if report is None:
        return {}, []
    fact = Fact(value=report.consistency if report.consistency is not None else report.mean, text=report.summary())
    return {"judge": fact}, report.warnings()


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
            scores = {
                r.name: score_predictions(
                    metric, state.predictions[r.name], state.ctx.eval[: len(state.predictions[r.name])], seed=state.task.data.seed
                )[0]
                for r in done
            }
        except TunewiseError as err:
            log(f"extra metric {metric.name} left out: {err}")
            continue
        for r in done:
            r.extra_scores[metric.name] = scores[r.name]


def score_warnings(state: RunState, results: Results, extra: list[Any]) -> list[str]:
    """Confusion matrices onto label rungs, and the decision's warnings (decision/warnings.py)."""
    from tunewise.decision.warnings import confusion, verdict_warnings

    confusions = {}
    if state.task.metric in ("accuracy", "macro_f1"):
        for r in results.rungs:
            if r.status == "done" and r.name in state.predictions:
                predictions = state.predictions[r.name]
                r.confusion = confusions[r.name] = confusion(predictions, [ex.answer for ex in state.ctx.eval[: len(predictions)]])
    directions = {m.name: m.higher_is_better for m in extra}
    focus = results.decision.rung if results.decision else None
    return verdict_warnings(results.rungs, confusions, state.task.metric, state.metric.higher_is_better, directions, focus)


def compare_rungs(state: RunState, results: list[RungResult]) -> None:
    """Paired p-values against the best rung, the previous rung and the plain prompt, on the
    examples both scored. Reported beside the verdict, which `_climb` takes from the decision core."""
    from tunewise.eval.stats import compare, compare_predictions

    done = [r for r in results if r.status == "done" and r.score is not None and r.name in state.per_example]
    if not done:
        return
    best = best_of(done, state.metric.higher_is_better, key=lambda r: r.score.value)
    binary = bool(getattr(state.metric, "binary", False))
    corpus_level = state.metric.corpus is not None

    def p_value(a: str, b: str) -> float:
        n = min(len(state.per_example[a]), len(state.per_example[b]))
        if corpus_level:  # e.g. macro-F1: recompute the metric on every resample, not per-example means
            return compare_predictions(
                state.metric, state.predictions[a][:n], state.predictions[b][:n], state.ctx.eval[:n], seed=state.ctx.seed
            ).p_value
        return compare(state.per_example[a][:n], state.per_example[b][:n], binary, seed=state.ctx.seed).p_value

    previous: RungResult | None = None
    for r in done:
        r.p_value_vs_best = None if r is best else p_value(r.name, best.name)
        if previous is not None:
            r.p_value_vs_previous = p_value(r.name, previous.name)
        baseline = baseline_of(state, r.name)
        if r.name != baseline and baseline in state.per_example:
            r.p_value_vs_zero_shot = p_value(r.name, baseline)
        previous = r


def look_sizes(n: int, adaptive: bool) -> list[int]:
    """Eval examples scored by each look: all at once, or growing quarters.

    >>> look_sizes(300, True), look_sizes(300, False), look_sizes(30, True)
    ([75, 150, 225, 300], [300], [30])
    """
    if not adaptive or n < MIN_ADAPTIVE_EXAMPLES:
        return [n]
    return sorted({max(1, -(-n * int(t * 100) // 100)) for t in LOOKS})


def _metric_value(state: RunState, name: str, n: int) -> float:
    statistic = state.metric.corpus_statistic(state.predictions[name][:n], state.ctx.eval[:n])
    if statistic is None:
        return float(np.mean(state.per_example[name][:n]))
    return float(statistic(np.arange(n)))


def margin_for(task: Task, best_value: float) -> float:
    """The margin on the metric's scale: `relative_margin` x the best score when set (the absolute
    margin when the best score is 0), else `margin`."""
    rel = task.ladder.relative_margin
    if rel is not None and abs(best_value) > 0:
        return rel * abs(best_value)
    return task.ladder.margin


def apply_verdict(results: list[RungResult], verdict: Any) -> None:
    """Each rung's standing against the best, from the verdict, onto its result."""
    for r in results:
        if r.name == verdict.best:
            r.vs_best, r.diff_vs_best, r.diff_vs_best_low, r.diff_vs_best_high = "best", None, None, None
            r.significantly_worse_than_best = False
        elif r.name in verdict.vs_best:
            pc = verdict.vs_best[r.name]
            r.vs_best, r.diff_vs_best, r.diff_vs_best_low, r.diff_vs_best_high = verdict.status[r.name], pc.diff, pc.lower, pc.upper
            r.significantly_worse_than_best = r.vs_best == "worse"


def decide(task: Task, results: list[RungResult], advice: dict[str, Any] | None, verdict: Any) -> Decision:
    from tunewise.decision.explain import Context, explain

    # What each candidate measures, then the registry's other rungs (advice they answer, not measured here).
    approaches = {r.name: get_rung(r.name).approaches for r in results}
    approaches |= {name: rung.approaches for name, rung in RUNGS.items() if name not in approaches}
    ctx = Context(task.metric, task.target, task.business.calls_per_month, task.business.horizon_months, 0, approaches)
    decision = explain(verdict, results, ctx, advice)
    if verdict is not None:
        decision.alpha = task.ladder.alpha
    return decision


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
    common = min(len(state.per_example[n]) for n in names)
    for i, ex in enumerate(state.ctx.eval[:common]):
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
    out.sort(key=lambda d: sum(oriented(v, state.metric.higher_is_better) for v in d.scores.values()))
    return out[:limit]


def _evidence(state: RunState, results: Results, progress: PROGRESS_FACTORY, log: Callable[[str], None] = print) -> None:
    """Learning curve and forgetting check for the first candidate whose rung trains (the evidence
    its rung declares; cached in the run folder)."""
    ft = next((r.name for r in results.rungs if r.status == "done" and get_rung(r.name).evidence), None)
    if ft is None:
        return
    from tunewise.ladder.tuning import context_for

    evidence = get_rung(ft).evidence
    ctx = context_for(state.ctx.for_candidate(ft), results.rung(ft))  # the rung's tuned knobs and train pool, if tuned
    if ft not in state.prepared:  # finished in an earlier session: the adapter on disk is reused
        state.prepared[ft] = get_rung(ft).prepare(ctx)
    from tunewise.ladder.results import Forgetting, LearningCurve

    folder = state.run_dir / "evidence"
    curve_file, forget_file = folder / "learning_curve.json", folder / "forgetting.json"
    for file, model in ((curve_file, LearningCurve), (forget_file, Forgetting)):
        if file.exists():  # a damaged file is said in one line and recomputed, never a traceback
            try:
                model.model_validate_json(file.read_bytes())
            except ValueError:
                log(f"{file.relative_to(state.run_dir).as_posix()} is damaged; recomputing it")
                file.unlink()
    if "learning_curve" not in evidence:
        pass
    elif curve_file.exists():
        results.learning_curve = LearningCurve.model_validate_json(curve_file.read_text())
    else:
        from tunewise.finetune.curve import learning_curve

        results.learning_curve = learning_curve(ctx, state.metric, with_rag=get_rung(ft).retrieved)
        results.learning_curve.rung = ft
        atomic_write_text(curve_file, results.learning_curve.model_dump_json(indent=2))
    if "forgetting" not in evidence:
        pass
    elif forget_file.exists():
        results.forgetting = Forgetting.model_validate_json(forget_file.read_text())
    else:
        from tunewise.finetune.forgetting import forgetting_check
        baseline = baseline_of(state, ft)
        base = state.prepared.get(baseline) or BASELINE.prepare(state.ctx.for_candidate(ft))
        results.forgetting = forgetting_check(ctx, base, state.prepared[ft])
        results.forgetting.rung = ft
        atomic_write_text(forget_file, results.forgetting.model_dump_json(indent=2))


def run_ladder(task: Task, options: RunOptions | None = None, progress: PROGRESS_FACTORY | None = None, log: Callable[[str], None] = print) -> Results:
    from tunewise.ui import progress_bar

    options = options or RunOptions()
    progress = progress or progress_bar
    started = time.perf_counter()
    metric = task_metric(task)
    has_corpus = task.corpus is not None or options.retriever is not None
    names = candidate_names(task, options, has_corpus)
    extra = extra_metrics(task)

    train, evals = _load_examples(task, options)
    if task.ladder.tune is not None:  # the budget for rungs added by --rungs/--all, and the dev split, before any work
        from tunewise.ladder.tuning import budget_problems, split_dev

        problems = budget_problems(task.ladder, names)
        if problems:
            raise TunewiseError("; ".join(problems))
        split_dev(train, task.ladder.tune.dev_examples, task.data.seed)
    run_id, run_dir = prepare_run(task, options)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", task_to_yaml(task))
    store = RunStore()
    store.start(run_id, task.name, run_dir.resolve(), task.model, task.metric, run_id.split("-")[-1])
    log(f"run {run_id}: {len(train)} train / {len(evals)} eval examples -> {run_dir}")

    prepared: dict[str, Prepared] = {}
    ctx = _context(task, train, evals, run_dir, options, prepared)
    state = RunState(task, run_id, run_dir, ctx, metric, prepared=prepared, has_corpus=has_corpus)
    results = Results(
        run_id=run_id,
        task=task.name,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model=(task.model if options.model is None else options.model.name) if not task.models else ", ".join(task.models),
        models={key: entry.model for key, entry in (task.models or {}).items()},
        metric=task.metric,
        target=task.target,
        higher_is_better=metric.higher_is_better,
        eval_examples=len(evals),
        train_examples=len(train),
        calls_per_month=task.business.calls_per_month,
        horizon_months=task.business.horizon_months,
        audit=_audit_summary(task),
        advice=_advice(task, len(train)),
    )
    rung_dir = run_dir / "rungs"
    _note_damaged_results(run_dir, log)
    status = "interrupted"
    try:
        done, verdict, looks = _climb(state, names, options, progress, log, store, results)
        results.rungs = list(done.values())
        measure_latencies(state, results.rungs, log)
        compare_rungs(state, results.rungs)
        score_extra_metrics(state, results.rungs, extra, log)
        if verdict is not None:
            apply_verdict(results.rungs, verdict)
        results.decision = decide(task, results.rungs, results.advice, verdict)
        results.decision.warnings = score_warnings(state, results, extra) + [
            f"{r.title}: {w}" for r in results.rungs for w in state.metric_warnings.get(r.name, [])
        ]
        distrust(results.decision, state.metric_warnings)
        results.decision.looks = looks
        results.break_even = break_evens(task, results.rungs)
        results.disagreements = disagreements(state, results.rungs)
        if options.evidence:
            _evidence(state, results, progress, log)
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


def candidate_names(task: Task, options: RunOptions, has_corpus: bool) -> list[str]:
    """The candidates to climb, as results name them: --rungs, else every rung that applies (--all) on
    every model, else `ladder.rungs`. Unknown names and models fail here, before any work."""
    listed = [task.candidate(n) for n in task.ladder.rungs]
    if options.rungs:
        names = [task.candidate(n) for n in options.rungs]
    elif options.all_rungs:  # every rung that applies; a listed rung that cannot run is shown as skipped
        keys = list(task.models) if task.models else [None]
        every = [task.candidate(n if key is None else f"{n}@{key}") for key in keys for n in RUNGS]
        names = [n for n in every if n in listed or (
            (has_corpus or not get_rung(n).needs_corpus)
            and not (get_rung(n).trains and task.model_entry(split_candidate(n)[1]).is_endpoint))]
        # Opt-in rungs (the constrained variants) only when listed: they double the prompted rungs.
        names = [n for n in names if not get_rung(n).opt_in or n in listed] + [n for n in listed if get_rung(n).opt_in and n not in names]
    else:
        names = listed
    for name in names:
        get_rung(name)  # an unknown rung fails before any work
        key = split_candidate(name)[1]
        if key is not None and (not task.models or key not in task.models):
            raise TunewiseError(f"rung {name!r} names model {key!r}, which the task does not define "
                                f"({'models: ' + ', '.join(task.models) if task.models else 'no `models:` section'})")
    return list(dict.fromkeys(names))


def _skip_dearer(state: RunState, names: list[str], done: dict[str, RungResult]) -> dict[str, RungResult]:
    """The stop rule: once a rung meets the target, the rungs after it that cannot be cheaper are
    skipped (their cost is estimated before any work). Returns the skipped rungs' results."""
    task = state.task
    good = [r for r in done.values() if r.status == "done" and r.meets_target]
    if not good or not names:
        return {}
    best_cost = min(r.horizon_cost or 0 for r in good)
    estimates = {n: estimated_horizon_cost(n, state, done) for n in names}
    if min(estimates.values()) < best_cost:
        return {}
    return {
        n: RungResult(
            name=n,
            title=candidate_title(state, n, state.ctx.for_candidate(n).task),
            **model_fields(state, n),
            status="skipped",
            note=f"a cheaper rung already meets the target; this one would cost at least "
            f"{fmt_money(estimates[n])} over {task.business.horizon_months} months "
            "(use --all to measure it anyway)",
        )
        for n in names
    }


def _climb(
    state: RunState,
    names: list[str],
    options: RunOptions,
    progress: PROGRESS_FACTORY,
    log: Callable[[str], None],
    store: RunStore,
    results: Results,
) -> tuple[dict[str, RungResult], Any, list[Look]]:
    """Score the rungs look by look and decide (decision/sequential.py, docs/decision.md).

    The decision core drives the looks; this supplies `measure`, which scores a rung on the first
    `size` eval examples: read back from an earlier session, or generated now (only the answers
    still missing). Rerunning replays the same looks over the saved answers, so a resumed run
    reaches the verdict a live one did.
    """
    from tunewise.decision import Candidate, sequential

    task, n = state.task, len(state.ctx.eval)
    sizes = look_sizes(n, task.ladder.adaptive and not options.full)
    rung_dir = state.run_dir / "rungs"
    done: dict[str, RungResult] = {}

    def measure(name: str, size: int) -> Candidate | None:
        if name not in done and not options.all_rungs:  # the stop rule, before a rung's first answer
            skipped = _skip_dearer(state, [m for m in names[names.index(name) :] if m not in done], done)
            done.update(skipped)
        result = done.get(name)
        if result is not None and result.status != "done":
            return None
        if result is None:
            cached = rung_dir / f"{name}.json"
            result = _restore(state, name, cached, log) if cached.exists() else None
        if result is None or (result.status == "done" and (result.scored_examples or n) < size):
            result = run_rung(state, name, progress, size, previous=result)
            atomic_write_text(rung_dir / f"{name}.json", result.model_dump_json(indent=2))
        done[name] = result
        if result.status != "done" or result.score is None:
            return None
        result.meets_target = meets_target(task, state.metric, result.score.value)
        store.record_rung(results.run_id, name, result.status, result.score.value)
        results.rungs = list(done.values())
        save_results(results, state.run_dir)
        return Candidate(
            name, result.title, state.per_example[name][:size], cost=result.horizon_cost or 0.0, value=_metric_value(state, name, size)
        )

    def on_look(look: Any) -> None:
        if len(sizes) > 1:
            what = "the verdict cannot change" if look.settled else (f"dropped {', '.join(look.dropped)}" if look.dropped else "continuing")
            log(f"look at {look.examples} of {n} eval examples: {what}")

    out = sequential(
        names,
        sizes,
        measure,
        alpha=task.ladder.alpha,
        margin=lambda live: margin_for(task, best_of((c.metric_value() for c in live), state.metric.higher_is_better)),
        target=task.target,
        higher_is_better=state.metric.higher_is_better,
        replicates=_replicates(state),
        on_look=on_look,
    )
    for name, info in out.stopped.items():
        done[name].stopped = (
            f"scored {info.examples} of {n} eval examples, then shown worse than {done[info.rival].title} by "
            f"more than the margin at look {info.look + 1}, so adaptive evaluation stopped scoring it"
        )
    # The verdict rests on each rung's first `used` answers: show those scores, not the extra answers
    # an earlier --full run may have saved, so a replay prints what a live adaptive run printed.
    for name, r in done.items():
        if r.status == "done" and name in state.per_example and len(state.per_example[name]) > out.used.get(name, n):
            _truncate(state, r, out.used[name])
    looks = [Look(examples=lk.examples, level=lk.level, dropped=lk.dropped, settled=lk.settled) for lk in out.looks]
    # Rungs the stop rule skipped after the loop's last call keep their place in the table.
    ordered = {name: done[name] for name in names if name in done}
    return ordered, out.verdict, looks


def _replicates(state: RunState) -> Any:
    """Bootstrap replicates of a corpus-level metric's difference (macro-F1); None for a mean."""
    metric = state.metric
    if metric.corpus is None:
        return None
    from tunewise.eval.stats import bootstrap_replicates

    def replicates(a: str, b: str, n: int) -> np.ndarray:
        stat_a = metric.corpus_statistic(state.predictions[a][:n], state.ctx.eval[:n])
        stat_b = metric.corpus_statistic(state.predictions[b][:n], state.ctx.eval[:n])
        return bootstrap_replicates(np.zeros(n), 2000, state.ctx.seed, lambda idx: stat_a(idx) - stat_b(idx))

    return replicates


def _truncate(state: RunState, r: RungResult, size: int) -> None:
    state.per_example[r.name] = state.per_example[r.name][:size]
    state.predictions[r.name] = state.predictions[r.name][:size]
    examples = state.ctx.eval[:size]
    r.score = score_predictions(state.metric, state.predictions[r.name], examples, seed=state.task.data.seed)[0]
    r.scored_examples = size
    r.meets_target = meets_target(state.task, state.metric, r.score.value)


def meets_target(task: Task, metric: Any, value: float) -> bool | None:
    """The score against the task's target, in the metric's direction; None without a target."""
    if task.target is None:
        return None
    return direction.meets_target(value, task.target, metric.higher_is_better)


def _note_damaged_results(run_dir: Path, log: Callable[[str], None]) -> None:
    """results.json is rewritten from the rungs on every run, so a damaged one only needs a line."""
    from tunewise.ladder.results import load_results

    if (run_dir / "results.json").exists():
        try:
            load_results(run_dir)
        except TunewiseError:
            log("results.json is damaged; rewriting it from the saved rungs")


def _restore(state: RunState, name: str, cached: Path, log: Callable[[str], None]) -> RungResult | None:
    """A rung finished in an earlier session, its predictions read back for comparisons and evidence;
    None, with one line saying what is damaged, when its record or its answers cannot be trusted."""
    where = cached.relative_to(state.run_dir).as_posix()
    try:
        result = RungResult.model_validate_json(cached.read_bytes())
    except (ValueError, OSError):  # pydantic's ValidationError is a ValueError: torn or garbled JSON
        log(f"{where} is damaged; recomputing {name}")
        return None
    if result.name != name:
        log(f"{where} holds rung {result.name!r}, not {name!r}; recomputing {name}")
        return None
    if (result.rung_version or 1) != get_rung(name).version:
        log(f"{where} was answered by version {result.rung_version or 1} of the {get_rung(name).name} rung, now "
            f"{get_rung(name).version}; recomputing {name}")
        (state.run_dir / "predictions" / f"{name}.partial.jsonl").unlink(missing_ok=True)
        return None
    if result.status == "done":
        try:
            rows = read_predictions(state.run_dir, result.predictions_file or f"predictions/{name}.jsonl", answered(result, state.ctx.eval))
        except DamagedRunError as err:
            log(f"{err}; recomputing {name}")
            return None
        state.predictions[name] = [r["prediction"] for r in rows]
        state.per_example[name] = [r["score"] for r in rows]
        # What the metric warns about these answers (a judge: read back from its cache, no new calls).
        state.metric_warnings[name] = metric_facts(state.metric, state.predictions[name], state.ctx.eval[: len(rows)])[1]
    log(f"{result.title}: finished earlier, read from {where}")
    return result


def open_run(run_dir: Path | str, options: RunOptions | None = None) -> tuple[Task, LadderContext, Results]:
    """A finished run's task, a fresh context over its data, and its results (for serve and export).

    The config saved in the run folder is the source of truth, so a run can be served or exported
    after the original task file moved or changed.
    """
    from tunewise.ladder.results import load_results
    from tunewise.task import TaskError, parse_task, read_yaml

    run_dir = Path(run_dir)
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise TunewiseError(f"{run_dir} is not a run folder (no config.yaml); list runs with `tunewise runs`")
    try:
        # The same bounded reader as task files: a run folder can come from anywhere.
        raw = read_yaml(config)
    except TaskError as err:
        raise DamagedRunError(f"{config} is damaged ({err}); rerun the task to rewrite it") from None
    try:
        task = parse_task(raw, config)
    except TunewiseError as err:
        raise DamagedRunError(f"{config} is not a valid task config ({err}); rerun the task to rewrite it") from None
    results = load_results(run_dir)
    options = options or RunOptions()
    train, evals = _load_examples(task, options)
    return task, _context(task, train, evals, run_dir, options), results
