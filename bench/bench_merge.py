"""Generation with a LoRA adapter merged into the weights vs the unmerged PEFT wrapper.

    python bench/bench_merge.py [--limit 32] [--rounds 3] [--adapter FOLDER]

On the intent eval set with the embedded SmolLM2-135M-Instruct, zero-shot prompts, greedy, the
task's 8 new tokens, fp32 (generation's CPU default), the same TransformersModel batching:
  unmerged  PeftModel: every adapted linear layer runs base + lora_A + lora_B
  merged    merge_and_unload(): one matmul per layer, what the LoRA rungs now generate with
Without --adapter a LoRA with the intent task's settings (r=16, alpha=32, all-linear) and random
(non-zero) weights is built: speed does not depend on the values, and the outputs still have to
agree. The two take turns each round, so background load slows them alike; the median round counts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

EVAL = Path(__file__).resolve().parents[1] / "src" / "tunewise" / "examples" / "intent" / "eval.jsonl"


def load_conversations(limit: int) -> list[list[dict[str, str]]]:
    rows = [json.loads(line) for line in EVAL.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row["messages"][:-1] for row in rows[:limit]]  # drop the gold answer


def random_adapter(model):
    """A PeftModel with the intent task's LoRA shape and random A and B (B is zero at init otherwise)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False)
    return get_peft_model(model, config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=32, help="eval examples per round (default 32)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--adapter", type=Path, help="a trained adapter folder for the embedded model")
    args = parser.parse_args()

    import torch

    from tunewise.finetune.rung import merge_adapter
    from tunewise.models.hf import TransformersModel, attach_adapter
    from tunewise.models.resolve import load_pretrained

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average at start "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    torch.manual_seed(0)
    base, tokenizer = load_pretrained("embedded")
    peft_model = attach_adapter(base, args.adapter) if args.adapter else random_adapter(base)
    peft_model.eval()
    unmerged = TransformersModel(peft_model, tokenizer, "unmerged", bf16="off")
    convs = load_conversations(args.limit)
    new = args.max_new_tokens
    unmerged.generate(convs[:2], new)  # warm-up: oneDNN picks its kernels on the first call
    reference = [g.text for g in unmerged.generate(convs, new)]

    # merge_and_unload folds in place: copy first so the unmerged wrapper keeps its own weights.
    import copy

    merged = TransformersModel(merge_adapter(copy.deepcopy(peft_model)), tokenizer, "merged", bf16="off")
    merged.generate(convs[:2], new)
    rates: dict[str, list[float]] = {"unmerged": [], "merged": []}
    texts: dict[str, list[str]] = {}
    for round_ in range(args.rounds):
        order = [("unmerged", unmerged), ("merged", merged)]
        for name, model in order if round_ % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            texts[name] = [g.text for g in model.generate(convs, new)]
            rates[name].append(len(convs) / (time.perf_counter() - started))
        print(f"round {round_ + 1}: unmerged {rates['unmerged'][-1]:.2f}, merged {rates['merged'][-1]:.2f} examples/s")
    same = sum(a == b for a, b in zip(texts["merged"], reference))
    u, m = statistics.median(rates["unmerged"]), statistics.median(rates["merged"])
    print(f"{len(convs)} intent examples, {new} new tokens, fp32, {args.rounds} rounds (median):")
    print(f"  unmerged PEFT   {u:6.2f} examples/s")
    print(f"  merged          {m:6.2f} examples/s")
    print(f"  ratio merged/unmerged {m / u:.2f}x; greedy outputs identical: {same}/{len(convs)}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
