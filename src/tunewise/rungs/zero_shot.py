"""zero_shot: the task's system prompt and the user's turn, nothing else. The baseline every other
rung must beat, and the cheapest request there is."""

from __future__ import annotations

from tunewise.rungs.base import LadderContext, Prepared, Rung, plain_request


def prepare(ctx: LadderContext) -> Prepared:
    return Prepared(ctx.base_model(), plain_request(ctx.system_prompt))


RUNG = Rung("zero_shot", "Zero-shot prompt", prepare, approaches=("prompting",))
