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
