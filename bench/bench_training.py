"""LoRA training throughput: tunewise's path vs a plain fp32 baseline, on the embedded model.

    python bench/bench_training.py [--examples 64] [--batch-size 16] [--rounds 2] [--threads N]

Same examples (the intent train split), same LoRA config (the intent task's: r=16, all-linear),
same batch size, one epoch each:
  baseline  transformers Trainer + PEFT, fp32, every batch padded to max_length (128), random order,
            the model's own loss over all positions (assistant-only labels, like tunewise)
  tunewise  `tunewise.finetune.train.train_model`: length-grouped batches with dynamic padding,
            bf16 autocast where the CPU/GPU has fast bf16 (frozen base held in bf16), vocabulary
            projection only at answer positions; its wall time includes its end-of-epoch checkpoint
Each path runs in its own process (so peak RSS is its own), alternating for --rounds rounds; the
median counts. tokens/s = non-pad tokens trained / wall time of `trainer.train()`.

FLOP rate: the standard approximation 6 x N x tokens for a forward+backward pass (N = all
parameters, trainable or not), as a share of the bf16 matmul peak measured in the same run with a
4096^2 torch.matmul. LoRA skips the frozen weights' gradients and tunewise skips most of the
vocabulary projection, so 6N overstates the work tunewise does: read its share as "useful work rate".
On a shared machine the absolute figures move with the load; the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TASK = Path(__file__).resolve().parents[1] / "src" / "tunewise" / "examples" / "intent" / "task.yaml"


def _threads(n: int | None) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


def _task(batch_size: int):
    from tunewise.task import load_task

    task = load_task(TASK)
    return task.model_copy(update={"train": task.train.model_copy(update={"epochs": 1, "batch_size": batch_size})})


def _examples(task, n: int):
    from tunewise.data.splits import load_splits

    train, _ = load_splits(task)
    return train[:n]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_baseline(n: int, batch_size: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments, default_data_collator

    from tunewise.finetune.train import IGNORE_INDEX, encode_examples
    from tunewise.models.resolve import load_pretrained

    task = _task(batch_size)
    model, tokenizer = load_pretrained(task.model, dtype=torch.float32)
    lora = task.train.lora
    model = get_peft_model(
        model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules, task_type="CAUSAL_LM")
    )
    encoded, _ = encode_examples(tokenizer, _examples(task, n), task.train.max_length)
    width = task.train.max_length
    rows = []
    for e in encoded:  # pad every example to max_length, as a tokenizer(padding="max_length") pipeline does
        pad = width - len(e["input_ids"])
        rows.append(
            {
                "input_ids": torch.tensor(e["input_ids"] + [tokenizer.pad_token_id] * pad),
                "attention_mask": torch.tensor(e["attention_mask"] + [0] * pad),
                "labels": torch.tensor(e["labels"] + [IGNORE_INDEX] * pad),
            }
        )
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=batch_size,
            num_train_epochs=1,
            learning_rate=task.train.learning_rate,
            save_strategy="no",
            eval_strategy="no",
            logging_steps=1000,
            report_to="none",
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
            seed=0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=default_data_collator)
        started = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - started
    tokens = sum(len(e["input_ids"]) for e in encoded)
    return {"wall_s": wall, "tokens": tokens, "padded_tokens": len(rows) * width, "peak_rss_mb": _peak_rss_mb(), "bf16": False}


def run_tunewise(n: int, batch_size: int) -> dict:
    from tunewise.finetune.train import train_model

    task = _task(batch_size)
    with tempfile.TemporaryDirectory() as out:
        outcome = train_model(task, _examples(task, n), Path(out), validation=[])
    s = outcome.summary
    return {"wall_s": s.wall_s, "tokens": s.train_tokens, "peak_rss_mb": _peak_rss_mb(), "bf16": s.bf16, "device": s.device}


def matmul_peak_tflops(size: int = 4096, repeats: int = 5) -> dict:
    import torch

    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b  # warm up
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - started)
        out[name] = 2 * size**3 / best / 1e12
    return out


def _child(phase: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--examples", str(args.examples), "--batch-size", str(args.batch_size)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{phase} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=64, help="intent train examples to train on (default 64)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each path; the median counts")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--phase", choices=["baseline", "tunewise"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    _threads(args.threads)
    if args.phase:
        result = (run_baseline if args.phase == "baseline" else run_tunewise)(args.examples, args.batch_size)
        print(json.dumps(result))
        return

    import torch

    from tunewise.models.resolve import load_pretrained

    model, _ = load_pretrained("embedded")  # builds the GGUF cache outside the timed runs
    n_params = sum(p.numel() for p in model.parameters())
    del model
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    runs: dict[str, list[dict]] = {"baseline": [], "tunewise": []}
    for round_ in range(args.rounds):
        for phase in ("baseline", "tunewise"):
            r = _child(phase, args)
            runs[phase].append(r)
            print(f"round {round_ + 1} {phase:9s} {r['tokens'] / r['wall_s']:8.1f} tokens/s  wall {r['wall_s']:6.1f} s", flush=True)
    peak = matmul_peak_tflops()
    print(f"matmul peak: bf16 {peak['bf16'] * 1000:.0f} GFLOP/s, fp32 {peak['fp32'] * 1000:.0f} GFLOP/s (4096^2, best of 5)")
    print(f"model parameters N = {n_params / 1e6:.1f}M; FLOPs/token = 6N = {6 * n_params / 1e9:.2f} GFLOP (approximation)")
    rates = {}
    for phase, results in runs.items():
        tps = statistics.median(r["tokens"] / r["wall_s"] for r in results)
        rates[phase] = tps
        flops = 6 * n_params * tps
        print(
            f"{phase:9s} median {tps:8.1f} tokens/s  {flops / 1e9:7.1f} GFLOP/s = {flops / (peak['bf16'] * 1e12):5.1%} of bf16 peak"
            f"  peak RSS {max(r['peak_rss_mb'] for r in results):,.0f} MB  bf16 {results[0]['bf16']}"
        )
    tokens = runs["baseline"][0]["tokens"]
    print(f"{tokens} non-pad tokens per run ({runs['baseline'][0]['padded_tokens']} positions in the padded baseline)")
    print(f"speed-up tunewise / baseline: {rates['tunewise'] / rates['baseline']:.2f}x (target >= 2x)")


if __name__ == "__main__":
    main()
