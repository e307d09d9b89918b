"""From a model spec (the task file's `model:`) to a loaded model: `load_model` picks the backend
(OpenAI-compatible API, transformers, or vLLM) for a spec and its options.

How a spec becomes local weights (SPEC_KINDS, the embedded model, the GGUF cache, `load_pretrained`)
is `tunewise.models.weights`, which the backends build on; its public names are re-exported here.
"""

from __future__ import annotations

from typing import Any

from tunewise.errors import TunewiseError
from tunewise.models.base import ChatModel
from tunewise.models.weights import (
    CACHE_FORMAT,
    EMBEDDED_FILE,
    EMBEDDED_NAME,
    EMBEDDED_PACKAGE,
    INSTALL_DEFAULT,
    SPEC_KINDS,
    ModelNotFound,
    gguf_cache,
    load_pretrained,
    locate_embedded,
    model_name,
    spec_kind,
)

__all__ = [
    "CACHE_FORMAT",
    "EMBEDDED_FILE",
    "EMBEDDED_NAME",
    "EMBEDDED_PACKAGE",
    "ENGINES",
    "HF_OPTIONS",
    "INSTALL_DEFAULT",
    "OPENAI_OPTIONS",
    "SPEC_KINDS",
    "ModelNotFound",
    "gguf_cache",
    "load_model",
    "load_pretrained",
    "locate_embedded",
    "model_name",
    "spec_kind",
]

HF_OPTIONS = {"device", "bf16", "max_batch_tokens", "max_batch_size", "adapter", "trust_remote_code", "engine"}
ENGINES = ("transformers", "vllm")
"""Generation engines for local models (`engine` option): transformers anywhere, vllm on CUDA (an extra)."""
OPENAI_OPTIONS = {"base_url", "api_key_env", "max_concurrency", "max_retries", "timeout"}


def load_model(spec: str = "embedded", **opts: Any) -> ChatModel:
    """A ChatModel for `spec`. Options: for local models device, bf16, max_batch_tokens,
    max_batch_size, adapter, trust_remote_code; for OpenAI-compatible APIs base_url, api_key_env,
    max_concurrency, max_retries, timeout. A `base_url` makes any spec an API model name. Options
    set to None are ignored, so a task's `model_options` can be passed whole."""
    opts = {k: v for k, v in opts.items() if v is not None}
    unknown = sorted(set(opts) - HF_OPTIONS - OPENAI_OPTIONS)
    if unknown:
        raise TunewiseError(
            f"unknown model option(s) {', '.join(unknown)}; valid: {', '.join(sorted(HF_OPTIONS | OPENAI_OPTIONS))}"
        )
    if spec.startswith("openai:") or opts.get("base_url"):
        wrong = sorted(set(opts) - OPENAI_OPTIONS)
        if wrong:
            raise TunewiseError(f"option(s) {', '.join(wrong)} do not apply to API model {spec!r}")
        from tunewise.models.openai_http import OpenAIChatModel

        name = spec.removeprefix("openai:")
        spec_kind("openai:" + name)  # rejects an empty name
        return OpenAIChatModel(name, **opts)
    wrong = sorted(set(opts) - HF_OPTIONS)
    if wrong:
        raise TunewiseError(f"option(s) {', '.join(wrong)} only apply to API models (openai:NAME or base_url)")
    engine = opts.pop("engine", None) or "transformers"
    if engine not in ENGINES:
        raise TunewiseError(f"model_options.engine {engine!r} is not one of {', '.join(ENGINES)}")
    if engine == "vllm":
        from tunewise.models.vllm_engine import VLLMModel

        return VLLMModel.from_spec(spec, **opts)
    from tunewise.models.hf import TransformersModel

    return TransformersModel.from_spec(spec, **opts)
