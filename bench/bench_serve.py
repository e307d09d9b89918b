"""Bounded load test of `tunewise serve` on loopback: dynamic batching vs one request per generate call.

    python bench/bench_serve.py                       # 32 requests at concurrency 1, 4, 16
    python bench/bench_serve.py --requests 64 --concurrency 1,4,16 --json bench-serve.json

Serves the zero_shot rung of the bundled intent task on the embedded model (a `--limit 8` run, no
training), through the real HTTP server, twice: with --max-batch 16 and with --max-batch 1. Each
level sends a fixed number of requests (the intent eval inputs, max_tokens = the task's 8) from
`concurrency` client threads and reports requests/s and p50/p95 latency. It also checks that both
servers gave the same answers. Figures depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
INTENT = ROOT / "src" / "tunewise" / "examples" / "intent" / "task.yaml"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def load(url: str, texts: list[str], concurrency: int) -> dict:
    """Send every text once from `concurrency` threads; latency is per request, wall for all."""
    import httpx

    counter = itertools.count()
    latencies: list[float] = []
    answers: dict[int, str] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(timeout=600) as http:
            while (i := next(counter)) < len(texts):
                started = time.perf_counter()
                r = http.post(url + "/v1/chat/completions", json={"model": "intent", "messages": [{"role": "user", "content": texts[i]}]})
                elapsed = time.perf_counter() - started
                with lock:
                    if r.status_code == 200:
                        latencies.append(elapsed)
                        answers[i] = r.json()["choices"][0]["message"]["content"]
                    else:
                        errors.append(f"{r.status_code} {r.text[:200]}")

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "errors": errors,
        "wall_s": wall,
        "requests_per_s": len(latencies) / wall,
        "p50_s": percentile(latencies, 0.5) if latencies else None,
        "p95_s": percentile(latencies, 0.95) if latencies else None,
        "answers": [answers.get(i) for i in range(len(texts))],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrency level (default 32)")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated client thread counts")
    parser.add_argument("--max-batch", type=int, default=16, help="the batched server's --max-batch")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]

    from tunewise.data.splits import load_splits
    from tunewise.ladder.run import RunOptions, run_ladder
    from tunewise.models.resolve import load_model
    from tunewise.serve.app import build_app, service_of
    from tunewise.serve.config import load_runs
    from tunewise.serve.server import BackgroundServer
    from tunewise.task import load_task

    import torch

    task = load_task(INTENT)
    _, evals = load_splits(task)
    texts = [evals[i % len(evals)].input_text for i in range(args.requests)]
    started = time.perf_counter()
    model = load_model(task.model)
    with tempfile.TemporaryDirectory() as tmp:
        options = RunOptions(model=model, eval_limit=8, rungs=["zero_shot"], evidence=False, report=False, out_dir=Path(tmp))
        results = run_ladder(task, options, log=lambda m: None)
        configs = load_runs([Path(tmp) / results.run_id], "zero_shot", model=model, log=lambda m: None)
    print(
        f"model {model.name} on {model.device} ({torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs); "
        f"setup {time.perf_counter() - started:.0f}s; {args.requests} requests per level, max_tokens {task.ladder.max_new_tokens}",
        flush=True,
    )

    rows = []
    answers: dict[str, list] = {}
    for mode, max_batch in (("batched", args.max_batch), ("unbatched", 1)):
        app = build_app(configs, max_batch=max_batch, batch_wait_ms=args.batch_wait_ms, max_queue=max(levels) + 1)
        with BackgroundServer(app) as server:
            load(server.url, texts[:2], 1)  # warm-up
            batcher = next(iter(service_of(app).batchers.values()))
            for c in levels:
                before = len(batcher.history)
                figures = load(server.url, texts, c)
                sizes = [r.size for r in batcher.history[before:]]
                answers.setdefault(mode, []).extend(figures.pop("answers"))
                row = {"mode": mode, "max_batch": max_batch, "concurrency": c, "mean_batch": statistics.mean(sizes) if sizes else 0, **figures}
                rows.append(row)
                print(
                    f"  {mode:9} c={c:<3} {row['requests_per_s']:6.2f} req/s  p50 {row['p50_s']:.2f}s  "
                    f"p95 {row['p95_s']:.2f}s  mean batch {row['mean_batch']:.1f}  errors {len(row['errors'])}",
                    flush=True,
                )

    print(f"\n{'mode':10} {'conc':>4} {'req/s':>7} {'p50 s':>7} {'p95 s':>7} {'batch':>6}")
    for r in rows:
        print(f"{r['mode']:10} {r['concurrency']:>4} {r['requests_per_s']:>7.2f} {r['p50_s']:>7.2f} {r['p95_s']:>7.2f} {r['mean_batch']:>6.1f}")
    print("\nbatched / unbatched:")
    for c in levels:
        b = next(r for r in rows if r["mode"] == "batched" and r["concurrency"] == c)
        u = next(r for r in rows if r["mode"] == "unbatched" and r["concurrency"] == c)
        print(f"  c={c:<3} throughput x{b['requests_per_s'] / u['requests_per_s']:.2f}   p50 latency x{b['p50_s'] / u['p50_s']:.2f}   p95 latency x{b['p95_s'] / u['p95_s']:.2f}")
    differ = sum(a != b for a, b in zip(answers["batched"], answers["unbatched"]))
    print(f"answers that differ between batched and unbatched serving: {differ} of {len(answers['batched'])}")
    print(f"total {time.perf_counter() - started:.0f}s")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "answers_differ": differ, "requests": args.requests}, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
