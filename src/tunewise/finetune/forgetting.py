"""Forgetting check: did fine-tuning cost the model general skills?

The base model and the fine-tuned one answer the same probe questions (zero-shot, each probe with its
own system prompt, no RAG); a paired comparison gives the change with its CI and p-value
(tunewise.eval.stats.compare: McNemar for the 0/1 `contains` scores, paired bootstrap otherwise).

Shipped probes: probes/general.jsonl (arithmetic, instruction following, general knowledge). The
metric is lenient on purpose, `contains`: a normalised reference appears as whole words in the
normalised answer ("The capital of France is Paris." passes for "Paris"), because a chatty but
correct answer is not forgetting.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunewise.data.example import Example
from tunewise.eval.stats import fmt_p
from tunewise.ladder.results import Forgetting, ProbeScore
from tunewise.rungs.base import Prepared, Request

PROBES_DIR = Path(__file__).parent / "probes"
GENERAL_PROBES = PROBES_DIR / "general.jsonl"
PROBE_MAX_NEW_TOKENS = 32
"""Room for a sentence: lenient scoring accepts the reference anywhere in the answer."""


def contains_score(prediction: str, example: Example) -> float:
    """The registered `contains` metric on one probe (tunewise.eval.metrics).

    >>> contains_score("The capital of France is Paris.", Example([], "Paris"))
    1.0
    >>> contains_score("Parisian", Example([], "Paris"))
    0.0
    """
    return contains_metric().per_example(prediction, example)


def contains_metric() -> Any:
    from tunewise.eval.metrics import get_metric

    return get_metric("contains")


def load_probes(path: Path) -> list[Example]:
    from tunewise.data.formats import read_examples

    return read_examples(path, "chat")


def as_is(model: Any) -> Prepared:
    """The model answering each probe exactly as written, with the probe's own system prompt."""
    return Prepared(model=model, build=lambda messages: Request(list(messages)))


def probe_verdict(name: str, score: ProbeScore, alpha: float) -> str:
    change = (
        f"{score.base.value:.2f} -> {score.finetuned.value:.2f} "
        f"(change {score.delta:+.2f}, 95% CI {score.delta_ci_low:+.2f} to {score.delta_ci_high:+.2f}"
        + (f", {fmt_p(score.p_value)})" if score.p_value is not None else ")")
    )
    significant = score.p_value is not None and score.p_value < alpha
    if significant and score.delta < 0:
        return (
            f"{name}: the fine-tuned model lost general skills, {change}. Keep the base model for other "
            "traffic, or mix general examples into the training data and train fewer epochs."
        )
    if significant and score.delta > 0:
        return f"{name}: the fine-tuned model did better than the base, {change}."
    return f"{name}: no measurable forgetting, {change}."


def forgetting_check(
    ctx: Any,
    base_prepared: Prepared,
    finetuned_prepared: Prepared,
    metric: Any = None,
    extra_probe_files: Sequence[Path] = (),
    max_new_tokens: int = PROBE_MAX_NEW_TOKENS,
) -> Forgetting:
    """Score the base and the fine-tuned model on each probe set; verdict in words.

    Only the rungs' models are used, never their prompt building: a probe is asked as written.
    """
    from tunewise.eval.stats import compare
    from tunewise.ladder.scoring import generate_and_score
    from tunewise.ui import progress_bar

    metric = metric or contains_metric()
    alpha = ctx.task.ladder.alpha
    sets = [("general", GENERAL_PROBES)] + [(Path(p).stem, Path(p)) for p in extra_probe_files]
    base, tuned = as_is(base_prepared.model), as_is(finetuned_prepared.model)
    scores = []
    for name, path in sets:
        probes = load_probes(path)
        with progress_bar(f"Forgetting probes ({name})", 2 * len(probes)) as advance:
            before = generate_and_score(base, probes, metric, max_new_tokens, advance, seed=ctx.seed)
            after = generate_and_score(tuned, probes, metric, max_new_tokens, advance, seed=ctx.seed)
        diff = compare(after.per_example, before.per_example, metric.binary, seed=ctx.seed)
        scores.append(
            ProbeScore(
                name=name,
                base=before.score,
                finetuned=after.score,
                delta=diff.diff,
                delta_ci_low=diff.diff_ci_low,
                delta_ci_high=diff.diff_ci_high,
                p_value=diff.p_value,
            )
        )
    rung = "lora_rag" if finetuned_prepared.details.get("rag") else "lora"
    verdict = " ".join(probe_verdict(s.name, s, alpha) for s in scores)
    return Forgetting(rung=rung, probes=scores, verdict=verdict)
