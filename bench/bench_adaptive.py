"""Adaptive against full evaluation: time to verdict, and whether the verdict is the same.

    python bench/bench_adaptive.py [TASK.yaml] [--all] [--out DIR]

One run folder, two passes, both timed as they generate:
1. adaptive (the default): looks at 25/50/75/100% of eval, scoring stops once the verdict cannot
   change; its generation time is what it took;
2. `--full` in the same folder: every rung answers every eval example. The answers adaptive already
   generated are reused, so the full pass generates only the rest; full evaluation's generation time
   is the adaptive pass's plus the rest's (the same answers a fresh full run would have generated).

Generation time counts each rung's answer generation only (the rung's `generation_s`); training,
latency probes and retrieval indexing are the same in both and left out. Prints the two verdicts,
the two times and their ratio (the issue's target: adaptive within 60% of full, same verdict).
Default task: the bundled e2e_extract, every rung that applies (zero-shot, few-shot, LoRA).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TASK = ROOT / "src" / "tunewise" / "examples" / "e2e_extract" / "task.yaml"


def generation_seconds(results) -> float:
    return sum(r.generation_s or 0.0 for r in results.rungs if r.status == "done")


def verdict_line(results) -> str:
    d = results.decision
    return f"{d.rung} ({'confident' if d.confident else 'inconclusive'})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", nargs="?", default=str(DEFAULT_TASK))
    parser.add_argument("--out", default=None, help="run folder parent (default: a new temp folder)")
    parser.add_argument("--rungs", default=None, help="comma-separated rungs (default: every rung that applies)")
    parser.add_argument(
        "--reuse-training",
        metavar="RUN_DIR",
        help="copy this earlier run's train/ folder (same task config) so the fine-tuned rungs are not trained "
        "again: training is outside the generation time compared here either way",
    )
    args = parser.parse_args(argv)

    import tempfile

    from tunewise.ladder.run import RunOptions, run_ladder
    from tunewise.task import load_task

    task = load_task(args.task)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-adaptive-"))
    rungs = [r for r in args.rungs.split(",")] if args.rungs else None
    common = dict(rungs=rungs, all_rungs=True, evidence=False, report=False, out_dir=out)
    quiet = lambda message: print(f"  {message}", file=sys.stderr)  # noqa: E731

    if args.reuse_training:
        import shutil

        from tunewise.ladder.run import prepare_run

        _, run_dir = prepare_run(task, RunOptions(**common))
        source = Path(args.reuse_training) / "train"
        if not source.is_dir():
            parser.error(f"{source} does not exist: give a run folder of the same task that trained")
        if not (run_dir / "train").exists():
            shutil.copytree(source, run_dir / "train")
    print(f"task {task.name}: {args.task}\nrun folder parent: {out}\ncpu: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    started = time.perf_counter()
    adaptive = run_ladder(task, RunOptions(**common), log=quiet)
    adaptive_wall = time.perf_counter() - started
    adaptive_gen = generation_seconds(adaptive)
    scored = {r.name: r.scored_examples for r in adaptive.rungs if r.status == "done"}

    started = time.perf_counter()
    full = run_ladder(task, RunOptions(full=True, **common), log=quiet)
    full_wall = time.perf_counter() - started
    full_gen = generation_seconds(full)  # adaptive's answers plus the rest, each timed as generated

    n = adaptive.eval_examples
    print(f"\neval examples: {n}; looks: {', '.join(str(lk.examples) + (' (settled)' if lk.settled else '') for lk in adaptive.decision.looks)}")
    print(f"answers scored per rung, adaptive: {scored}")
    print(f"{'':10}{'verdict':>34}{'generation s':>15}{'wall s (this pass)':>21}")
    print(f"{'adaptive':10}{verdict_line(adaptive):>34}{adaptive_gen:>15.1f}{adaptive_wall:>21.1f}")
    print(f"{'full':10}{verdict_line(full):>34}{full_gen:>15.1f}{'(' + format(full_wall, '.1f') + ' for the rest)':>21}")
    same = adaptive.decision.rung == full.decision.rung
    ratio = adaptive_gen / full_gen if full_gen else float("nan")
    print(f"\nsame verdict: {'yes' if same else 'NO'}; adaptive generation time / full: {ratio:.2f} (target <= 0.60)")
    print(f"adaptive: {adaptive.decision.sentence}\nfull:     {full.decision.sentence}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
