"""Quantization against the unquantized model, measured in one run: accuracy change, latency, memory.

    python bench/bench_quantize.py [--task src/tunewise/examples/intent/quantized.yaml] [--out DIR] [--limit N]

Runs the task's listed rungs as `tunewise run TASK --full --out DIR` does (a finished run in DIR
is read back, not regenerated), then prints one Markdown row per quantized rung against the rung
whose prompt it answers (`ladder.quantize.prompt`) on the unquantized model, all from that run:
  accuracy    the paired difference with its 95% CI and p-value (McNemar on 0/1 scores)
  agreement   answers identical to the unquantized model's
  p50, p95    single-request latency, timed interleaved across the rungs, and its ratio
  weights     weight memory and its ratio
  tokens/s    batch throughput over the eval answers, and its ratio (timed at different moments)
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASK = Path(__file__).resolve().parents[1] / "src" / "tunewise" / "examples" / "intent" / "quantized.yaml"


def table(results, reference: str) -> str:
    base = results.rung(reference)
    lines = [
        f"unquantized: {base.title}: {results.metric} {base.score.value:.3f} [{base.score.ci_low:.3f}, {base.score.ci_high:.3f}], "
        f"p50 {base.latency_p50_s * 1000:.0f} ms, p95 {base.latency_p95_s * 1000:.0f} ms, {base.score.n} examples",
        "",
        f"| rung | {results.metric} | change vs unquantized [95% CI], p | agreement | p50 ms (x) | p95 ms (x) | weights MB (x) | tokens/s (x) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results.rungs:
        if not r.name.startswith("quantized_"):
            continue
        if r.status != "done":
            lines.append(f"| {r.name} | {r.status}: {r.note} | | | | | | |")
            continue
        f = r.facts
        measured = f["quality_change"].value is not None
        change = f["quality_change"].text.split(" against ")[0].split(" ", 1)[1] if measured else "-"  # "-0.010 [-0.035, +0.015]"
        p = re.search(r"p[=<][0-9.e-]+", f["quality_change"].text).group(0) if measured else ""
        agree = f"{f['agreement'].value:.0%}" if "agreement" in f else "-"
        weights = f["weights_mb"].text.split("(")[-1].rstrip(")")
        speed = f"{f['throughput'].value:.1f} ({f['speedup'].value:.2f}x)" if "speedup" in f else "-"
        lines.append(
            f"| {r.name} | {r.score.value:.3f} | {change}, {p} | {agree} | "
            f"{r.latency_p50_s * 1000:.0f} ({base.latency_p50_s / r.latency_p50_s:.2f}x faster) | "
            f"{r.latency_p95_s * 1000:.0f} ({base.latency_p95_s / r.latency_p95_s:.2f}x faster) | "
            f"{f['weights_mb'].value:.0f} ({weights}) | {speed} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", type=Path, default=TASK)
    parser.add_argument("--out", type=Path, default=Path("bench-quantize"), help="folder for the run folder (reused)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N eval examples")
    args = parser.parse_args()

    from tunewise.ladder.run import RunOptions, run_ladder
    from tunewise.task import load_task

    task = load_task(args.task)
    options = RunOptions(rungs=task.ladder.rungs, all_rungs=True, full=True, evidence=False, eval_limit=args.limit, out_dir=args.out)
    results = run_ladder(task, options)
    reference = task.candidate(task.ladder.quantize.prompt)
    print()
    print(table(results, reference))


if __name__ == "__main__":
    main()
