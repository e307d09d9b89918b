"""Memory of serving N LoRA routes plus the router's base fallback: one model per route (before) vs
N adapters on one copy of the base (serve/adapters.py), in the same run.

    python bench/bench_router.py                  # N = 1, 2, 4 routes on the embedded model; ~6 min
    python bench/bench_router.py --routes 3 --json bench-router.json

Each (mode, N) runs in a fresh process, which loads what `tunewise serve RUN_1..RUN_N --router` holds:
- per-route: for each route its own base + adapter (`load_finetuned`, as the LoRA rung loads it), plus
  the plain base for the router's fallback: N + 1 copies of the base weights;
- shared: the base once (`SharedBase`), each adapter added by name, the fallback a view with adapters
  off: one copy.
It then answers one request per route and one for the fallback, and reports the process's resident
set (VmRSS) and its peak (VmHWM). The adapters are random LoRA weights (r=8 on q_proj and v_proj,
B non-zero so they change answers): memory does not depend on what they learned. The answers of
the two modes are compared (same greedy decoding, unmerged in both).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
QUESTION = [{"role": "user", "content": "Play some jazz in the kitchen"}]


def make_adapters(spec: str, n: int, folder: Path) -> list[Path]:
    import torch
    from peft import LoraConfig, get_peft_model

    from tunewise.models.resolve import load_pretrained

    base, _ = load_pretrained(spec)
    paths = []
    for i in range(n):
        model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]), adapter_name=f"a{i}")
        torch.manual_seed(i)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.02)
        out = folder / f"route{i}"
        model.save_pretrained(out, selected_adapters=[f"a{i}"])
        # save_pretrained puts a non-default adapter in a subfolder named after it
        paths.append(out / f"a{i}" if (out / f"a{i}" / "adapter_config.json").is_file() else out)
        base = model.unload()  # the plain base back, for the next adapter
    return paths


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(mode: str, spec: str, adapters: list[str]) -> dict:
    """Load the routes the way `mode` does, answer once per route, report memory."""
    from tunewise.models.resolve import load_model

    started = time.perf_counter()
    if mode == "per-route":
        from tunewise.finetune.train import load_finetuned
        from tunewise.models.hf import TransformersModel

        routes = [TransformersModel(*load_finetuned(Path(a), spec), f"route{i}", bf16="off") for i, a in enumerate(adapters)]
        fallback = load_model(spec, bf16="off")
    else:
        from tunewise.serve.adapters import SharedBase

        shared = SharedBase.from_spec(spec, bf16="off")
        routes = [shared.add_adapter(f"route{i}", a) for i, a in enumerate(adapters)]
        fallback = shared.view(None)
    load_s = time.perf_counter() - started
    answers = [m.generate([QUESTION], 12)[0].text for m in [*routes, fallback]]
    return {"mode": mode, "routes": len(adapters), "rss_mb": status_mb("VmRSS"), "peak_mb": status_mb("VmHWM"), "load_s": load_s, "answers": answers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routes", default="1,2,4", help="numbers of LoRA routes to try, comma-separated")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "ADAPTERS_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.model, json.loads(args.child[1]))))
        return

    counts = [int(n) for n in args.routes.split(",")]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        adapters = [str(p) for p in make_adapters(args.model, max(counts), Path(tmp))]
        for n in counts:
            for mode in ("per-route", "shared"):
                out = subprocess.run(
                    [sys.executable, __file__, "--model", args.model, "--child", mode, json.dumps(adapters[:n])],
                    capture_output=True, text=True, env=env, check=True,
                )
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"  {mode:9} routes={n}: RSS {rows[-1]['rss_mb']:.0f} MB", file=sys.stderr)

    print(f"\nModel {args.model}; N LoRA routes + the router's base fallback, one request answered per route.\n")
    print("| routes | per-route RSS MB (peak) | shared RSS MB (peak) | shared / per-route | load s per-route / shared | same answers |")
    print("|---|---|---|---|---|---|")
    for n in counts:
        a, b = (next(r for r in rows if r["routes"] == n and r["mode"] == m) for m in ("per-route", "shared"))
        same = sum(x == y for x, y in zip(a["answers"], b["answers"]))
        print(
            f"| {n} | {a['rss_mb']:.0f} ({a['peak_mb']:.0f}) | {b['rss_mb']:.0f} ({b['peak_mb']:.0f}) | "
            f"{b['rss_mb'] / a['rss_mb']:.2f} | {a['load_s']:.1f} / {b['load_s']:.1f} | {same}/{len(a['answers'])} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
