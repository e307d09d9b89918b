"""Generation throughput: tunewise's batched path vs a naive one-`generate`-per-example loop.

    python bench/bench_generation.py [--limit N] [--max-new-tokens 8]

On the intent eval set with the embedded SmolLM2-135M-Instruct, greedy, the same max_new_tokens:
  naive     one `model.generate` call per example, fp32 (the loop most notebooks write)
  batched   TransformersModel with its default settings (length-bucketed, left-padded batches)
and, for the batched path, bf16 autocast against fp32, with the agreement of the greedy outputs.
The paths take turns on chunks of examples, so background load slows them alike; the load
average is printed too, since the absolute figures move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

EVAL = Path(__file__).resolve().parents[1] / "src" / "tunewise" / "examples" / "intent" / "eval.jsonl"


def load_conversations(limit: int) -> list[list[dict[str, str]]]:
    rows = [json.loads(line) for line in EVAL.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row["messages"][:-1] for row in rows[:limit]]  # drop the gold answer


def naive_loop(model, tokenizer, conversations, max_new_tokens: int) -> list[str]:
    import torch

    texts = []
    with torch.inference_mode():
        for conv in conversations:
            inputs = tokenizer.apply_chat_template(conv, add_generation_prompt=True, return_tensors="pt", return_dict=True)
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            texts.append(tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    return texts


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def agreement(a: list[str], b: list[str]) -> str:
    same = sum(x == y for x, y in zip(a, b))
    first = sum(x.split()[:1] == y.split()[:1] for x, y in zip(a, b))
    return f"{same}/{len(a)} identical, {first}/{len(a)} same first word"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=32, help="eval examples to generate for (default 32)")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=16, help="examples per turn; each path runs its own batches")
    args = parser.parse_args()

    import torch

    from tunewise.models.hf import TransformersModel
    from tunewise.models.resolve import load_pretrained

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    (model, tokenizer), load_s = timed(lambda: load_pretrained("embedded"))
    print(f"load_pretrained('embedded'): {load_s:.1f} s")
    convs = load_conversations(args.limit)
    n, new = len(convs), args.max_new_tokens

    default = TransformersModel(model, tokenizer, "embedded")
    batched = {
        "fp32": TransformersModel(model, tokenizer, "embedded", bf16="off"),
        "bf16": TransformersModel(model, tokenizer, "embedded", bf16="on"),
    }
    for m in batched.values():
        m.generate(convs[:2], new)  # warm-up: oneDNN picks its kernels on the first call

    # The paths take turns chunk by chunk, so that other processes on a shared machine slow
    # them alike; one path timed after another would credit it with a quiet or a busy spell.
    texts: dict[str, list[str]] = {"naive": [], "fp32": [], "bf16": []}
    seconds = dict.fromkeys(texts, 0.0)
    for start in range(0, n, args.chunk):
        chunk = convs[start : start + args.chunk]
        runs = {"naive": lambda c=chunk: naive_loop(model, tokenizer, c, new)}
        for label, m in batched.items():
            runs[label] = lambda c=chunk, m=m: [g.text for g in m.generate(c, new)]
        order = list(runs) if (start // args.chunk) % 2 == 0 else list(reversed(runs))
        for label in order:
            out, took = timed(runs[label])
            texts[label] += out
            seconds[label] += took
    default_label = "bf16" if default.bf16 else "fp32"

    rate = lambda label: n / seconds[label]  # noqa: E731
    print(f"\n{n} examples in chunks of {args.chunk}, max_new_tokens={new}, "
          f"default precision {default_label}, max_batch_tokens={default.max_batch_tokens}")
    print(f"  naive loop, fp32        {rate('naive'):7.2f} examples/s  ({seconds['naive']:.1f} s)")
    print(f"  batched, default        {rate(default_label):7.2f} examples/s  ({seconds[default_label]:.1f} s)")
    print(f"  speed-up batched/naive  {seconds['naive'] / seconds[default_label]:7.2f}x  (target >= 5x)")
    print(f"  batched fp32            {rate('fp32'):7.2f} examples/s  ({seconds['fp32']:.1f} s)")
    print(f"  batched bf16 autocast   {rate('bf16'):7.2f} examples/s  ({seconds['bf16']:.1f} s; "
          f"{seconds['fp32'] / seconds['bf16']:.2f}x fp32)")
    print("agreement of greedy outputs:")
    print(f"  naive fp32 vs batched fp32: {agreement(texts['naive'], texts['fp32'])}")
    print(f"  batched bf16 vs fp32:       {agreement(texts['bf16'], texts['fp32'])}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
