"""`tunewise advise`: the decision framework as explicit rules. Pure Python, instant, no model.

>>> from tunewise.advise import Situation, advise
>>> advise(Situation(n_examples=20)).approach.value
'collect_data'
"""

from tunewise.advise.questionnaire import QUESTIONS, AdviseError, Question, Situation, ask, situation_from_task
from tunewise.advise.rules import RULES, Advice, Approach, Rule, Step, advise, get_rule

__all__ = [
    "QUESTIONS",
    "RULES",
    "Advice",
    "AdviseError",
    "Approach",
    "Question",
    "Rule",
    "Situation",
    "Step",
    "advise",
    "ask",
    "get_rule",
    "situation_from_task",
]
