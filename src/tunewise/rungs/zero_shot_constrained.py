"""zero_shot_constrained: the zero-shot prompt, answers restricted to the task's labels, JSON schema
or regex (rungs/constrained.py)."""

from tunewise.rungs.zero_shot import RUNG as PLAIN
from tunewise.rungs.constrained import constrained

RUNG = constrained(PLAIN)
