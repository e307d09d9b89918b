"""few_shot_constrained: the few-shot prompt, answers restricted to the task's labels, JSON schema or
regex (rungs/constrained.py)."""

from tunewise.rungs.few_shot import RUNG as PLAIN
from tunewise.rungs.constrained import constrained

RUNG = constrained(PLAIN)
