"""Paired tests between rungs of two runs of the same task data (issue 13: the RAFT-trained lora_rag of
one run against rag and lora answered in another).

    python bench/compare_runs.py RUN_A:RUNG RUN_B:RUNG [RUN_A:RUNG RUN_C:RUNG ...] [--metric token_f1 --metric contains]

`tunewise compare` tests two rungs of one run. Here each side is `run_folder:rung`, e.g.
runs/squad_rag-d75e6a0b0f:lora_rag runs/squad_rag-ca3e196e18:rag; arguments are read in pairs. Both
runs must have scored the same eval examples in the same (seeded) order, which is checked row by row
against the saved inputs and gold answers before anything is compared; the metrics are recomputed
from the saved answers with the first run's task and tested as `tunewise compare` does (McNemar for
0/1 metrics, a paired bootstrap otherwise), each metric on its own, no correction across pairs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tunewise.errors import TunewiseError


def load_side(spec: str) -> tuple[Path, str, list[dict]]:
    from tunewise.ladder.results import load_results
    from tunewise.ladder.run import answered, open_run, read_predictions

    folder, sep, rung = spec.rpartition(":")
    if not sep or not folder:
        raise TunewiseError(f"{spec!r}: write RUN_FOLDER:RUNG, e.g. runs/squad_rag-ca3e196e18:rag")
    run_dir = Path(folder)
    _, ctx, results = open_run(run_dir)
    result = results.rung(rung)
    if result is None or result.status != "done":
        done = ", ".join(r.name for r in load_results(run_dir).rungs if r.status == "done") or "none"
        raise TunewiseError(f"rung {rung!r} did not finish in {run_dir}; finished rungs: {done}")
    rows = read_predictions(run_dir, result.predictions_file or f"predictions/{rung}.jsonl", answered(result, ctx.eval))
    return run_dir, rung, rows


def compare_sides(a: str, b: str, metrics: list[str]) -> list[dict]:
    from tunewise.data.example import Example
    from tunewise.eval.stats import compare, evaluate
    from tunewise.ladder.run import open_run, task_metric

    (run_a, rung_a, rows_a), (_, rung_b, rows_b) = load_side(a), load_side(b)
    n = min(len(rows_a), len(rows_b))
    bad = [i + 1 for i in range(n) if (rows_a[i]["input"], rows_a[i]["gold"]) != (rows_b[i]["input"], rows_b[i]["gold"])]
    if bad:
        raise TunewiseError(f"{a} and {b} did not answer the same eval examples in the same order (rows {bad[:5]} differ)")
    task, ctx, _ = open_run(run_a)
    examples: list[Example] = ctx.eval[:n]
    out = []
    for name in metrics:
        metric = task_metric(task, name)
        scored = [evaluate(metric, [r["prediction"] for r in rows[:n]], examples, seed=task.data.seed) for rows in (rows_a, rows_b)]
        test = compare(scored[0].per_example, scored[1].per_example, metric.binary, seed=task.data.seed)
        out.append({"metric": metric.name, "a": rung_a, "b": rung_b, "examples": n, "value_a": scored[0].value,
                    "value_b": scored[1].value, "difference": test.diff, "ci": (test.diff_ci_low, test.diff_ci_high),
                    "p_value": test.p_value, "test": test.method})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sides", nargs="+", help="RUN_FOLDER:RUNG, in pairs (A B [A B ...])")
    parser.add_argument("--metric", action="append", help="metric to test (repeatable); default the task's")
    args = parser.parse_args(argv)
    if len(args.sides) % 2:
        parser.error("give the sides in pairs: RUN_A:RUNG RUN_B:RUNG [...]")
    from tunewise.eval.stats import fmt_p

    try:
        for a, b in zip(args.sides[::2], args.sides[1::2]):
            metrics = args.metric or [None]
            for row in compare_sides(a, b, metrics):
                low, high = row["ci"]
                print(f"{row['metric'] or 'task metric'}: {row['a']} {row['value_a']:.3f} vs {row['b']} {row['value_b']:.3f} "
                      f"on {row['examples']}: difference {row['difference']:+.3f} [{low:+.3f}, {high:+.3f}], "
                      f"{fmt_p(row['p_value'])} ({row['test']})")
    except TunewiseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
