"""Rebuild train.jsonl and eval.jsonl from ../e2e_extract (run from this folder: python build.py).

The E2E NLG descriptions shipped in e2e_extract, turned around: the attributes in, a description out
(the house style is the E2E writers' own). Whitespace is collapsed and duplicate descriptions dropped.
Examples are grouped by their attributes and whole groups are split (seeded), so no attribute set is
in both train and eval. Eval: one example per attribute set, its first description (in e2e_extract's
file order, train then eval) as the answer and all of them as `references`. Train: every description
of the other attribute sets.
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "e2e_extract"
EVAL_GROUPS = 100
SEED = 0
SYSTEM = (
    "Write a short listing for this restaurant from its attributes: one or two plain, friendly sentences "
    "that mention every attribute given and nothing else."
)


def main() -> None:
    groups: dict[str, list[str]] = {}
    for split in ("train", "eval"):
        for line in (SOURCE / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            messages = json.loads(line)["messages"]
            attributes, description = messages[-1]["content"], " ".join(messages[1]["content"].split())
            kept = groups.setdefault(attributes, [])
            if description not in kept:
                kept.append(description)
    keys = sorted(groups)
    random.Random(SEED).shuffle(keys)

    def row(attributes: str, answer: str, references: list[str] | None = None) -> str:
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": attributes},
            {"role": "assistant", "content": answer},
        ]
        out = {"messages": messages, **({"references": references} if references and len(references) > 1 else {})}
        return json.dumps(out, ensure_ascii=False) + "\n"

    with (HERE / "eval.jsonl").open("w", encoding="utf-8") as f:
        for key in keys[:EVAL_GROUPS]:
            f.write(row(key, groups[key][0], groups[key]))
    with (HERE / "train.jsonl").open("w", encoding="utf-8") as f:
        for key in keys[EVAL_GROUPS:]:
            for description in groups[key]:
                f.write(row(key, description))


if __name__ == "__main__":
    main()
