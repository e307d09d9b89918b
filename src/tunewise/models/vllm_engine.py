"""vLLM as the ladder's generation engine on CUDA (`model_options: {engine: vllm}` in a task file).

Same contract as `TransformersModel`: the prompt is the model's own chat template rendered by its
tokenizer (the token ids the transformers backend would feed), decoding is greedy, generation stops
at the end-of-turn token, and the text is decoded the same way. vLLM schedules all requests of a
`generate` call itself (continuous batching, paged KV cache), so tunewise hands it the whole list.

vLLM is an optional extra (`pip install 'tunewise[vllm]'`), CUDA only, and imported only here, when
the engine is asked for. On a CPU, or without vllm, `VLLMModel.from_spec` raises one error that names
every problem and the fix.

Not bit-identical to transformers: vLLM's kernels (paged attention, its own matmul order, bf16 by
default) round differently, so an answer that is a near-tie can differ. bench/gpu_check.sh compares
the two on the same prompts.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError
from tunewise.models.base import Generation, Messages, Progress, TemplatedTokens

INSTALL = "pip install 'tunewise[vllm]' (Linux + CUDA only)"
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""`--max-lora-rank` values vLLM accepts."""


def max_lora_rank(r: int) -> int:
    """The `max_lora_rank` to give vLLM for an adapter of rank r: the smallest accepted one >= r.

    >>> max_lora_rank(16), max_lora_rank(20), max_lora_rank(1000)
    (16, 32, 1000)
    """
    return next((allowed for allowed in VLLM_LORA_RANKS if allowed >= r), r)


def unavailable_reasons() -> list[str]:
    """Why the vLLM engine cannot run here (empty when it can)."""
    problems = []
    if importlib.util.find_spec("vllm") is None:
        problems.append(f"the vllm package is not installed: {INSTALL}")
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if not cuda:
        problems.append("vLLM needs a CUDA GPU and torch sees none here (torch.cuda.is_available() is False)")
    return problems


def check_available() -> None:
    problems = unavailable_reasons()
    if problems:
        raise TunewiseError(
            "model_options.engine 'vllm' cannot run: " + "; ".join(problems)
            + ". Leave engine unset (or 'transformers') to generate with transformers, which runs anywhere"
        )


def _dtype(bf16: str) -> str:
    if bf16 not in ("auto", "on", "off"):
        raise TunewiseError(f"bf16 must be one of auto, on, off (got {bf16!r})")
    import torch

    if bf16 == "off":
        return "float32"
    if bf16 == "on" or torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float16"


def _source(spec: str) -> str:
    """What vLLM loads for a spec: a transformers folder (a GGUF's dequantised cache) or a hub id."""
    from tunewise.models.weights import gguf_cache, locate_embedded, spec_kind

    kind = spec_kind(spec)
    if kind == "openai":
        raise TunewiseError(f"{spec!r} is an API model: engine vllm runs local weights only")
    if kind == "embedded":
        folder, file = locate_embedded()
        return str(gguf_cache(folder / file))
    if kind == "gguf":
        return str(gguf_cache(Path(spec).expanduser().resolve()))
    if kind == "folder":
        return str(Path(spec).expanduser().resolve())
    return spec


class VLLMModel(TemplatedTokens):
    """A `ChatModel` over a vLLM `LLM` (offline engine), optionally with one LoRA adapter."""

    def __init__(self, llm: Any, tokenizer: Any, name: str, lora_request: Any = None, eos_ids: list[int] | None = None) -> None:
        self.llm = llm
        self.tokenizer = tokenizer
        self.name = name
        self.lora_request = lora_request
        self.device = "cuda"
        self.eos_ids = eos_ids or [tokenizer.eos_token_id]

    @classmethod
    def from_spec(
        cls,
        spec: str = "embedded",
        adapter: str | Path | None = None,
        bf16: str = "auto",
        max_batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        trust_remote_code: bool = False,
        device: str | None = None,
        **engine_args: Any,
    ) -> "VLLMModel":
        """Load `spec` into vLLM. A GGUF spec (the embedded model included) is served from its
        dequantised transformers folder, the weights the other backends use. `engine_args` go to
        `vllm.LLM` as they are (e.g. gpu_memory_utilization, max_model_len, tensor_parallel_size)."""
        check_available()
        if device is not None and not str(device).startswith("cuda"):
            raise TunewiseError(f"engine vllm runs on CUDA only (device {device!r} was asked for)")
        from transformers import AutoTokenizer
        from vllm import LLM

        from tunewise.models.weights import model_name

        source = _source(spec)
        args: dict[str, Any] = {"model": source, "dtype": _dtype(bf16), "seed": 0, "trust_remote_code": trust_remote_code}
        if max_batch_size:
            args["max_num_seqs"] = max_batch_size
        if max_batch_tokens:
            args["max_num_batched_tokens"] = max_batch_tokens
        lora_request = None
        name = model_name(spec)
        if adapter is not None:
            import json

            from vllm.lora.request import LoRARequest

            rank = json.loads((Path(adapter) / "adapter_config.json").read_text())["r"]
            args |= {"enable_lora": True, "max_lora_rank": max_lora_rank(rank), "max_loras": 1}
            lora_request = LoRARequest(Path(adapter).name, 1, str(Path(adapter).resolve()))
            name = f"{name}+{Path(adapter).name}"
        # The ladder can hold two engines at once (the base for the prompted rungs, base + adapter for
        # the LoRA rungs): each takes 40% of the GPU rather than vLLM's default 90%.
        args["gpu_memory_utilization"] = 0.4
        args |= engine_args
        llm = LLM(**args)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        eos = []
        from transformers import GenerationConfig

        try:
            configured = GenerationConfig.from_pretrained(source).eos_token_id
        except OSError:
            configured = None
        for value in (configured if isinstance(configured, list) else [configured]) + [tokenizer.eos_token_id]:
            if value is not None and int(value) not in eos:
                eos.append(int(value))
        return cls(llm, tokenizer, name, lora_request, eos)

    def generate(self, conversations: Sequence[Messages], max_new_tokens: int, progress: Progress | None = None) -> list[Generation]:
        from vllm import SamplingParams

        prompts = [self.prompt_ids(c) for c in conversations]
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=self.eos_ids, skip_special_tokens=True)
        started = time.perf_counter()
        outputs = self.llm.generate(
            [{"prompt_token_ids": ids} for ids in prompts], params, lora_request=self.lora_request, use_tqdm=False
        )
        latency = time.perf_counter() - started  # vLLM runs them as one continuous batch
        results = []
        stops = set(self.eos_ids)
        for ids, out in zip(prompts, outputs):
            tokens = list(out.outputs[0].token_ids)
            end = next((j for j, t in enumerate(tokens) if t in stops), len(tokens))
            text = self.tokenizer.decode(tokens[:end], skip_special_tokens=True).strip()
            results.append(Generation(text, len(ids), end, latency))
        if progress:
            progress(len(conversations))
        return results
