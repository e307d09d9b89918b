"""Which way a metric points: the one place that says whether a score is better, the best, or good enough.

Every built-in metric is higher-is-better; a custom one may say `fn.higher_is_better = False` (an
error rate, an edit distance). Everything that compares scores (the verdict, its sentences and
warnings, the report, the CLI, tuning on dev, the learning curve) asks these functions rather than
writing `max(...)` or `>=`, so a lower-is-better metric is never ranked the wrong way round.

Pure: no imports beyond the standard library.

>>> better(0.1, 0.3, higher_is_better=False), better(0.1, 0.3, higher_is_better=True)
(True, False)
>>> best_of([0.2, 0.05, 0.4], higher_is_better=False)
0.05
>>> meets_target(0.15, 0.2, higher_is_better=False), meets_target(0.15, 0.2, higher_is_better=True)
(True, False)
>>> target_phrase(0.2, higher_is_better=False)
'≤ 0.2'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def sign(higher_is_better: bool) -> float:
    """+1 when higher is better, -1 when lower is: multiply a score by it to rank "higher = better"."""
    return 1.0 if higher_is_better else -1.0


def oriented(value: float, higher_is_better: bool) -> float:
    """The score turned so that higher is better whatever the metric's direction.

    >>> oriented(0.3, False)
    -0.3
    """
    return value if higher_is_better else -value


def better(a: float, b: float, higher_is_better: bool) -> bool:
    """Whether score `a` is strictly better than score `b` (a tie is not better)."""
    return oriented(a, higher_is_better) > oriented(b, higher_is_better)


def best_of(items: Iterable[T], higher_is_better: bool, key: Callable[[T], float] | None = None) -> T:
    """The item with the best score (`key(item)`, or the item itself); the first one on a tie.

    >>> best_of([("a", 0.3), ("b", 0.1), ("c", 0.1)], False, key=lambda x: x[1])
    ('b', 0.1)
    """
    score = key or (lambda item: item)  # type: ignore[assignment,return-value]
    return max(items, key=lambda item: oriented(score(item), higher_is_better))  # max keeps the first of equals


def ranked(items: Iterable[T], higher_is_better: bool, key: Callable[[T], float] | None = None) -> list[T]:
    """Best first; equal scores keep their order.

    >>> ranked([0.3, 0.1, 0.2], False)
    [0.1, 0.2, 0.3]
    """
    score = key or (lambda item: item)  # type: ignore[assignment,return-value]
    return sorted(items, key=lambda item: -oriented(score(item), higher_is_better))


def meets_target(value: float, target: float | None, higher_is_better: bool) -> bool | None:
    """The score against the target: at least it when higher is better, at most it when lower is;
    None without a target.

    >>> meets_target(0.2, 0.2, False), meets_target(0.21, 0.2, False), meets_target(0.5, None, True)
    (True, False, None)
    """
    if target is None:
        return None
    return oriented(value, higher_is_better) >= oriented(target, higher_is_better)


def short_of_target(higher_is_better: bool) -> str:
    """Where a score that misses the target lies: 'below' it, or 'above' it for lower-is-better."""
    return "below" if higher_is_better else "above"


def target_phrase(target: float, higher_is_better: bool) -> str:
    """The target with the side that meets it: '≥ 0.85', or '≤ 0.2' for lower-is-better."""
    return f"{'≥' if higher_is_better else '≤'} {target:g}"


def direction_words(higher_is_better: bool) -> str:
    return "higher is better" if higher_is_better else "lower is better"
