"""The train and eval examples of a task: two files, or one file split deterministically."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

from tunewise.data.example import Example
from tunewise.data.formats import DataError, Problem, iter_records, problems_message

if TYPE_CHECKING:
    from tunewise.task import Task


def _read(path: Path, fmt: str, problems: list[Problem]) -> list[Example]:
    examples = []
    try:
        for _, item in iter_records(path, fmt):
            if isinstance(item, Problem):
                item.path = str(path)
                problems.append(item)
            elif (found := item.lone_surrogate()) is not None:  # whatever the reader let through
                field, escape = found
                problems.append(Problem(
                    item.line or 0,
                    f"lone surrogate {escape} in {field}: half of a UTF-16 pair, no tokenizer can encode it",
                    "write the character itself, or both halves of the pair (\\ud83d\\ude00 is 😀), or delete it",
                    str(path),
                ))
            else:
                examples.append(item)
    except DataError as err:  # the file as a whole (missing, unknown format): keep collecting
        problems.append(Problem(0, str(err), ""))
        return examples
    if not examples and not any(p.path == str(path) for p in problems):
        problems.append(Problem(0, "no examples in the file", "give a file with at least one record", str(path)))
    return examples


def split_examples(examples: list[Example], eval_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Hold out round(n x eval_fraction) examples (at least 1, leaving at least 1 to train on), chosen
    by a shuffle seeded with `seed`; both parts keep file order.

    >>> from tunewise.data.example import Example
    >>> data = [Example([{"role": "user", "content": str(i)}], str(i)) for i in range(10)]
    >>> train, held = split_examples(data, 0.2, seed=0)
    >>> len(train), len(held)
    (8, 2)
    """
    if len(examples) < 2:
        raise DataError(f"cannot split {len(examples)} example(s) into train and eval; give at least 2")
    n_eval = min(len(examples) - 1, max(1, round(len(examples) * eval_fraction)))
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    train = [ex for i, ex in enumerate(examples) if i not in held]
    evals = [ex for i, ex in enumerate(examples) if i in held]
    return train, evals


def load_splits(task: Task) -> tuple[list[Example], list[Example]]:
    """(train, eval) examples for a task. Raises DataError listing every bad line of every file."""
    spec = task.data
    problems: list[Problem] = []
    if spec.file is not None:
        examples = _read(spec.file, spec.format, problems)
        if problems:
            raise DataError(problems_message(problems))
        return split_examples(examples, spec.eval_fraction, spec.seed)
    assert spec.train is not None and spec.eval is not None  # DataSpec guarantees one source
    train = _read(spec.train, spec.format, problems)
    evals = _read(spec.eval, spec.format, problems)
    if problems:
        raise DataError(problems_message(problems))
    return train, evals
