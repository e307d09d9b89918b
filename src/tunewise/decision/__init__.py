"""The decision core: which candidate to use, how sure we are, and what would settle it.

Pure: numpy and scipy only, no torch, no files, no models. The ladder, the report, the simulation
study (bench/sim_decision.py) and the tests all call the same functions. Method: docs/decision.md.
"""

from tunewise.decision.sequential import LookRecord, Sequential, Stopped, sequential
from tunewise.decision.verdict import (
    Candidate,
    PairComparison,
    Verdict,
    choose,
    compare_pair,
    examples_needed,
    spending_schedule,
)

__all__ = [
    "Candidate",
    "LookRecord",
    "Sequential",
    "Stopped",
    "sequential",
    "PairComparison",
    "Verdict",
    "choose",
    "compare_pair",
    "examples_needed",
    "spending_schedule",
]
