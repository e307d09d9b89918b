"""The GPU paths that can be exercised without a GPU: bench/gpu_check.sh --dry-run (so CI runs its
CPU-safe parts) and the vLLM engine's refusal on a machine without vllm or CUDA."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunewise.errors import TunewiseError

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_builds_trains_generates_and_writes_accelerate_configs(tmp_path, isolated):
    pytest.importorskip("torch")
    pytest.importorskip("accelerate")
    out = tmp_path / "check"
    env = {**os.environ, "TUNEWISE_HOME": str(isolated), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(out), "--python", sys.executable],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    text = done.stdout
    assert "gpu_check.sh: all steps passed" in text
    assert "build-model llama tiny: 3.2M parameters" in text
    assert "train lora-cpu: " in text and " tokens/s, " in text
    assert "generate transformers: " in text and "accelerate-config fsdp:" in text
    import yaml

    fsdp = yaml.safe_load((out / "fsdp.yaml").read_text())
    assert fsdp["distributed_type"] == "FSDP" and fsdp["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    assert fsdp["fsdp_config"]["fsdp_use_orig_params"] is True  # LoRA under FSDP needs it
    assert yaml.safe_load((out / "ddp.yaml").read_text())["distributed_type"] == "MULTI_GPU"
    assert next((out / "train-lora").glob("lora-full-*/adapter/adapter_model.safetensors"))


def test_gpu_check_rejects_unknown_arguments_with_the_valid_ones():
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--gpus", "8"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown argument '--gpus' (valid: --dry-run" in done.stderr


@pytest.mark.parametrize(
    "vllm_installed, cuda, expected",
    [
        (False, False, ["the vllm package is not installed: pip install 'tunewise[vllm]'", "vLLM needs a CUDA GPU"]),
        (True, False, ["vLLM needs a CUDA GPU and torch sees none here"]),
        (False, True, ["the vllm package is not installed"]),
    ],
)
def test_vllm_engine_names_every_reason_it_cannot_run_and_the_fix(monkeypatch, vllm_installed, cuda, expected):
    torch = pytest.importorskip("torch")
    from tunewise.models.resolve import load_model

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: (object() if vllm_installed else None) if name == "vllm" else real_find_spec(name, *a)
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    with pytest.raises(TunewiseError) as info:
        load_model("embedded", engine="vllm")  # refused before anything loads
    message = str(info.value)
    assert message.startswith("model_options.engine 'vllm' cannot run: ")
    assert all(part in message for part in expected)
    assert ("vllm package" in message) == (not vllm_installed) and ("CUDA GPU" in message) == (not cuda)
    assert "Leave engine unset (or 'transformers') to generate with transformers" in message


def test_vllm_engine_is_a_task_option_and_unknown_engines_list_the_valid_ones(monkeypatch):
    from tunewise.models.resolve import load_model
    from tunewise.task import TaskError, parse_task

    base = {"name": "t", "data": {"train": "t.jsonl", "eval": "e.jsonl"}}
    assert parse_task({**base, "model_options": {"engine": "vllm"}}).model_options.engine == "vllm"
    assert parse_task(base).model_options.engine is None
    with pytest.raises(TaskError, match="engine"):
        parse_task({**base, "model_options": {"engine": "tgi"}})
    with pytest.raises(TunewiseError, match="engine 'tgi' is not one of transformers, vllm"):
        load_model("embedded", engine="tgi")


def test_vllm_engine_module_imports_without_vllm():
    """The module is imported lazily by load_model; importing it must not need vllm itself."""
    import tunewise.models.vllm_engine as engine

    assert engine.INSTALL.startswith("pip install 'tunewise[vllm]'")
    if importlib.util.find_spec("vllm") is None:
        assert "vllm" not in sys.modules


def test_vllm_model_sends_the_transformers_prompt_ids_greedily_and_cuts_at_end_of_turn(monkeypatch):
    """The engine's contract with a stand-in for vllm (no GPU here): the same prompt token ids the
    transformers backend feeds, temperature 0, the eos ids as stop tokens, answers in order, cut at
    the first end-of-turn token and decoded like TransformersModel does."""
    import types

    pytest.importorskip("transformers")
    from test_finetune import build_model, build_tokenizer

    from tunewise.models.hf import TransformersModel
    from tunewise.models.vllm_engine import VLLMModel

    seen: dict = {}

    class SamplingParams:
        def __init__(self, **kwargs):
            seen["params"] = kwargs

    class FakeLLM:
        def generate(self, prompts, params, lora_request=None, use_tqdm=True):
            seen["prompts"], seen["lora"] = prompts, lora_request
            words = ["meow", "woof", "moo"]
            return [
                types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=[vocab[words[i]], vocab["<|im_end|>"], vocab["cat"]])])
                for i, _ in enumerate(prompts)
            ]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=SamplingParams))
    tokenizer = build_tokenizer()
    vocab = tokenizer.get_vocab()
    model = VLLMModel(FakeLLM(), tokenizer, "fake-vllm", lora_request="adapter", eos_ids=[tokenizer.eos_token_id])
    conversations = [[{"role": "system", "content": "answer briefly ."}, {"role": "user", "content": f"what does the {a} say ?"}]
                     for a in ("cat", "dog", "cow")]
    done = []
    generations = model.generate(conversations, max_new_tokens=5, progress=done.append)
    reference = TransformersModel(build_model(tokenizer), tokenizer, "tiny", bf16="off")
    assert seen["prompts"] == [{"prompt_token_ids": reference.prompt_ids(c)} for c in conversations]
    assert seen["params"] == {"temperature": 0.0, "max_tokens": 5, "stop_token_ids": [tokenizer.eos_token_id], "skip_special_tokens": True}
    assert seen["lora"] == "adapter" and done == [3]
    assert [g.text for g in generations] == ["meow", "woof", "moo"]
    assert [g.output_tokens for g in generations] == [1, 1, 1]
    assert [g.prompt_tokens for g in generations] == [len(reference.prompt_ids(c)) for c in conversations]
