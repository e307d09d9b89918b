"""Constrained decoding for a prompted rung: the same prompt, but the model may only produce what
the task's constraint allows (its `constraint:`, else the train labels or a JSON schema inferred
from the train answers; models/constraints.py). Used by zero_shot_constrained and
few_shot_constrained; opt-in, as they double the prompted rungs."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from tunewise.rungs.base import LadderContext, Prepared, Rung

if TYPE_CHECKING:
    from tunewise.task import Task


def constrained(rung: Rung) -> Rung:
    """`rung` answering under the task's constraint, as a rung of its own: `<name>_constrained`."""

    def prepare(ctx: LadderContext) -> Prepared:
        from tunewise.models.constraints import ConstrainedModel, infer_constraint

        constraint = infer_constraint(ctx.task, ctx.train)
        prepared = rung.prepare(ctx)
        prepared.model = ConstrainedModel(prepared.model, constraint)
        prepared.constraint = constraint
        return prepared

    def describe(task: Task) -> str:
        from tunewise.models.constraints import constraint_kind

        return f"{rung.title(task)}, constrained ({constraint_kind(task)})"

    return replace(
        rung, name=f"{rung.name}_constrained", label=f"{rung.label}, constrained", prepare=prepare,
        constrained=True, opt_in=True, describe=describe, approaches=(), unavailable=unavailable,
    )


def unavailable(task: Task) -> str | None:
    """Why the task's constrained rungs cannot run (e.g. free text with no constraint), else None."""
    from tunewise.models.constraints import constraint_unavailable

    return constraint_unavailable(task)
