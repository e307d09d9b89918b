"""The ladder's rungs: one module each, all listed here in RUNGS, the only registry.

A rung module declares one `RUNG = Rung(...)` (rungs/base.py): its name, title, cost profile
(demonstrations, retrieved chunks, training), the advisor approaches it measures, and `prepare`.
Two exceptions: quantized.py declares one rung per quantization method (`RUNGS`), and distill.py
`make_rung(get_rung)`, as its teacher is another rung of this registry (handed in, not imported back).
Adding a rung is one new module and one line below. Everything else (`estimate`, the stop rule, the
decision, the report, `serve`) reads RUNGS and never names a rung.

A task can run a rung on one of several models (`models:`); a candidate is then named
`rung@model`, e.g. `few_shot@large` (`split_candidate`).
"""

from __future__ import annotations

from tunewise.errors import TunewiseError
from tunewise.rungs.base import Rung
from tunewise.rungs.distill import make_rung as make_distill
from tunewise.rungs.few_shot import RUNG as FEW_SHOT
from tunewise.rungs.few_shot_constrained import RUNG as FEW_SHOT_CONSTRAINED
from tunewise.rungs.few_shot_rag import RUNG as FEW_SHOT_RAG
from tunewise.rungs.lora import RUNG as LORA
from tunewise.rungs.lora_rag import RUNG as LORA_RAG
from tunewise.rungs.quantized import RUNGS as QUANTIZED
from tunewise.rungs.rag import RUNG as RAG
from tunewise.rungs.zero_shot import RUNG as ZERO_SHOT
from tunewise.rungs.zero_shot_constrained import RUNG as ZERO_SHOT_CONSTRAINED

# distill's teacher is another rung of this registry: it is handed the lookup (called after import).
DISTILL = make_distill(lambda name: get_rung(name))

RUNGS: dict[str, Rung] = {
    r.name: r
    for r in (ZERO_SHOT, FEW_SHOT, ZERO_SHOT_CONSTRAINED, FEW_SHOT_CONSTRAINED, RAG, FEW_SHOT_RAG, LORA, LORA_RAG, DISTILL, *QUANTIZED)
}
"""Every rung, cheapest first: the order `--all` climbs them in."""

BASELINE = ZERO_SHOT
"""The plain prompt: every candidate's paired test against the baseline, and the base model of the
forgetting check, use this rung on the candidate's own model."""

MODEL_SEPARATOR = "@"


def split_candidate(name: str) -> tuple[str, str | None]:
    """A candidate's rung and model key: "few_shot@large" -> ("few_shot", "large"); "lora" -> ("lora", None).

    >>> split_candidate("few_shot@large"), split_candidate("lora")
    (('few_shot', 'large'), ('lora', None))
    """
    rung, sep, model = name.partition(MODEL_SEPARATOR)
    return rung, (model if sep else None)


def get_rung(name: str) -> Rung:
    """The rung of a rung or candidate name ("few_shot" or "few_shot@large")."""
    rung = split_candidate(name)[0]
    if rung not in RUNGS:
        raise TunewiseError(f"unknown rung {rung!r}; valid rungs: {', '.join(RUNGS)}")
    return RUNGS[rung]
