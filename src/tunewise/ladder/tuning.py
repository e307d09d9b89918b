"""Tuning on dev: choose each rung's knobs without looking at eval (docs/decision.md, "Tuning on dev").

With `ladder.tune` set, a tuned rung (one whose knobs the task lists values for) first carves a dev
split from **train** (seeded, the same for every rung), scores every configuration of its grid on
it with the task's metric through `generate_and_score`, keeps the best (ties: the configuration
listed first, the cheaper one), and only then is scored on eval, once, as today. The dev examples
are removed from what the rung draws on (few-shot pool, training data) during tuning and after, so
a dev example never sees itself and the configuration scored on eval is the one measured on dev.

The rungs are unchanged: a configuration is a copy of the task with the chosen knobs, and a
`LadderContext` whose train split is the pool, handed to the rung's usual `prepare`. While tuning,
the context's eval split is empty, so eval cannot be reached from a rung.

Dev scores are cached in <run>/tuning/<rung>.json (atomic writes), one entry per configuration as
it finishes, so a rerun or a resumed run makes no model calls for the configurations already scored.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

from tunewise.data.example import Example
from tunewise.decision.direction import best_of
from tunewise.errors import TunewiseError

CACHE_FORMAT = 1

# The knobs each rung can tune are declared by the rung (tunewise.rungs, `Rung.knobs`), in tie-break
# order: a configuration listed earlier (a smaller RAG k, then a smaller few-shot k, fewer epochs)
# wins a tie.

LABELS = {"few_shot_k": "k", "few_shot_selection": "selection", "rag_k": "RAG k", "learning_rate": "lr", "epochs": "epochs"}

DEFAULT_GRID: dict[str, Any] = {"few_shot_k": [2, 4, 8], "rag_k": [1, 3, 5], "max_configs": 9}
"""What `tunewise run --tune` tries when the task has no `ladder.tune`: the prompted rungs' k only
(training one adapter per configuration is too slow to be a default)."""


def with_default_grid(task: Any) -> Any:
    """The task with DEFAULT_GRID as its `ladder.tune` (validated: the budget holds by construction)."""
    ladder = type(task.ladder).model_validate({**task.ladder.model_dump(), "tune": DEFAULT_GRID})
    return task.model_copy(update={"ladder": ladder})


def grid(name: str, ladder: Any) -> list[dict[str, Any]]:
    """The configurations a rung tries, cheapest first; [] when the rung is not tuned.

    >>> from tunewise.task import LadderSpec
    >>> grid("few_shot", LadderSpec(tune={"few_shot_k": [8, 2]}))
    [{'few_shot_k': 2}, {'few_shot_k': 8}]
    >>> grid("zero_shot", LadderSpec(tune={"few_shot_k": [8, 2]}))
    []
    """
    tune = ladder.tune
    if tune is None:
        return []
    from tunewise.rungs import get_rung

    knobs = [k for k in get_rung(name).knobs if getattr(tune, k) is not None]
    if not knobs:
        return []
    return [dict(zip(knobs, values)) for values in itertools.product(*(getattr(tune, k) for k in knobs))]


def budget_problems(ladder: Any, rungs: list[str]) -> list[str]:
    """Why `ladder.tune` cannot be used with these rungs (over the budget, or nothing to tune)."""
    tune = ladder.tune
    if tune is None:
        return []
    if not any(getattr(tune, k) is not None for k in LABELS):
        return [f"tune lists no knob to try; give one or more of {', '.join(LABELS)}, e.g. few_shot_k: [2, 4, 8]"]
    problems = []
    for name in rungs:
        configs = grid(name, ladder)
        if len(configs) > tune.max_configs:
            sizes = " x ".join(f"{k} {len(getattr(tune, k))}" for k in configs[0])
            problems.append(
                f"tune: rung {name} would try {len(configs)} configurations ({sizes}), over the budget "
                f"tune.max_configs = {tune.max_configs}; list fewer values or raise max_configs"
            )
    return problems


def apply(task: Any, config: dict[str, Any]) -> Any:
    """A copy of the task with one configuration's knobs set."""
    ladder, train = task.ladder, task.train
    few = {k: config[f"few_shot_{k}"] for k in ("k", "selection") if f"few_shot_{k}" in config}
    if few:
        ladder = ladder.model_copy(update={"few_shot": ladder.few_shot.model_copy(update=few)})
    if "rag_k" in config:
        ladder = ladder.model_copy(update={"rag": ladder.rag.model_copy(update={"k": config["rag_k"]})})
    training = {k: config[k] for k in ("learning_rate", "epochs") if k in config}
    if training:
        train = train.model_copy(update=training)
    return task.model_copy(update={"ladder": ladder, "train": train})


def split_dev(train: list[Example], n: int, seed: int) -> tuple[list[Example], list[Example]]:
    """(pool, dev): `n` train examples drawn with a seeded shuffle, the rest kept in file order.

    >>> ex = [Example([{"role": "user", "content": str(i)}], str(i)) for i in range(10)]
    >>> pool, dev = split_dev(ex, 3, seed=0)
    >>> len(pool), len(dev), {e.answer for e in pool} & {e.answer for e in dev}
    (7, 3, set())
    """
    if n >= len(train):
        raise TunewiseError(
            f"ladder.tune.dev_examples is {n} but the train split has {len(train)} examples; "
            "lower dev_examples so some remain to draw on"
        )
    order = list(range(len(train)))
    random.Random(f"dev-split-{seed}").shuffle(order)
    held = sorted(order[:n])
    chosen = set(held)
    return [ex for i, ex in enumerate(train) if i not in chosen], [train[i] for i in held]


def describe_config(config: dict[str, Any], only: list[str] | None = None) -> str:
    """A configuration in words, `only` its listed knobs.

    >>> describe_config({"few_shot_k": 4, "rag_k": 3})
    'k=4, RAG k=3'
    """
    return ", ".join(f"{LABELS[k]}={v:g}" if isinstance(v, float) else f"{LABELS[k]}={v}" for k, v in config.items() if only is None or k in only)


def describe(tuning: Any) -> str:
    """One line for the CLI and the report, naming only the knobs that varied.

    >>> from tunewise.ladder.results import Score, Tried, Tuning
    >>> s = lambda v: Score(value=v, ci_low=v, ci_high=v, n=60)
    >>> print(describe(Tuning(dev_examples=60, pool_examples=400, chosen={"few_shot_k": 4},
    ...     tried=[Tried(config={"few_shot_k": k}, dev_score=s(v)) for k, v in [(2, 0.71), (4, 0.78), (8, 0.77)]])))
    k=4 chosen on 60 dev examples (k=2 0.710, k=4 0.780, k=8 0.770)
    """
    varied = [k for k in tuning.chosen if len({json.dumps(t.config.get(k)) for t in tuning.tried}) > 1] or list(tuning.chosen)
    tried = ", ".join(f"{describe_config(t.config, varied)} {t.dev_score.value:.3f}" for t in tuning.tried)
    return f"{describe_config(tuning.chosen, varied)} chosen on {tuning.dev_examples} dev examples ({tried})"


def _dev_digest(dev: list[Example]) -> str:
    h = hashlib.sha256()
    for ex in dev:
        h.update(json.dumps(ex.to_chat(), sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def _read_cache(path: Any, digest: str) -> dict[str, Any]:
    """Saved dev scores by configuration key; {} when missing, damaged or for another dev split."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict) or raw.get("format") != CACHE_FORMAT or raw.get("dev") != digest:
        return {}
    scores = raw.get("scores")
    return scores if isinstance(scores, dict) else {}


def tuned_context(
    ctx: Any,
    name: str,
    metric: Any,
    progress: Callable[[str, int], Any] | None = None,
) -> tuple[Any, Any]:
    """(the context the rung is scored on eval with, the Tuning record); (ctx, None) when untuned.

    Scores every configuration on dev first (or reads the saved scores), so eval is reached only
    after the choice is made, by the caller.
    """
    from tunewise.ladder.results import Score, Tried, Tuning, atomic_write_text
    from tunewise.rungs import get_rung
    from tunewise.ladder.scoring import generate_and_score

    task = ctx.task
    configs = grid(name, task.ladder)
    if not configs:
        return ctx, None
    pool, dev = split_dev(ctx.train, task.ladder.tune.dev_examples, ctx.seed)
    digest = _dev_digest(dev)
    cache = ctx.run_dir / "tuning" / f"{name}.json"
    saved = _read_cache(cache, digest)
    tried = []
    for config in configs:
        key = json.dumps(config, sort_keys=True)
        entry = saved.get(key)
        try:
            score = Score.model_validate(entry["dev_score"]) if isinstance(entry, dict) else None
        except ValueError:
            score = None
        if score is None:
            candidate = apply(task, config)
            # eval=[]: nothing a rung does while tuning can reach the eval examples.
            tuning_ctx = replace(ctx, task=candidate, train=pool, eval=[])
            prepared = get_rung(name).prepare(tuning_ctx)
            bar = progress(f"Tuning {get_rung(name).title(candidate)} on dev", len(dev)) if progress else nullcontext(None)
            with bar as advance:
                scored = generate_and_score(prepared, dev, metric, task.ladder.max_new_tokens, advance, seed=ctx.seed)
            score = scored.score
            saved[key] = {"config": config, "dev_score": score.model_dump()}
            atomic_write_text(cache, json.dumps({"format": CACHE_FORMAT, "dev": digest, "scores": saved}, indent=2))
        tried.append(Tried(config=config, dev_score=score))
    # The best dev score in the metric's direction; a tie stays with the cheaper, earlier configuration.
    best = best_of(tried, metric.higher_is_better, key=lambda t: t.dev_score.value)
    tuning = Tuning(dev_examples=len(dev), pool_examples=len(pool), chosen=best.config, tried=tried)
    return replace(ctx, task=apply(task, best.config), train=pool), tuning


def context_for(ctx: Any, result: Any) -> Any:
    """The context a finished rung was scored with (for serve, export and evidence): its recorded
    choice applied and the dev split removed; ctx itself for an untuned rung."""
    tuning = getattr(result, "tuning", None)
    if tuning is None:
        return ctx
    pool, _ = split_dev(ctx.train, tuning.dev_examples, ctx.seed)
    return replace(ctx, task=apply(ctx.task, tuning.chosen), train=pool)
