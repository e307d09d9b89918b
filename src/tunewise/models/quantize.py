"""Quantized copies of a loaded model, for the quantized rungs (rungs/quantized.py): the same weights
at lower precision, answering through the same generation code (or llama.cpp, for GGUF).

`quantize(model, method)` returns the copy, built once per loaded model and method (the ladder, its
latency timing and `tunewise serve` share it); `method_unavailable` says why a method cannot run
here, before anything loads. The methods (METHODS):

  int8       torch dynamic quantization (`quantize_dynamic`) of the decoder's nn.Linear layers: int8
             weights, and activations rounded to 8 bits on the fly, one scale per batch tensor; the
             matmuls run in int8 (fbgemm / oneDNN). CPU only. The output head stays in full
             precision, as bitsandbytes leaves it (INT8_KEEP_HEAD says why). Rounding activations
             costs small models dearly (docs/quantize.md), and an answer can depend on what it was
             batched with, since the activation scale spans the batch.
  int8_weight  weight-only int8 (models/int8_weight.py): the decoder's linear weights in int8, one
             scale per output channel, activations in bf16, through torch's int8-weight matmul
             kernel (as torchao's int8 weight-only does on CPU). CPU only.
  bf16       the weights themselves cast to bfloat16 (not `bf16` autocast, which keeps fp32 weights
             and casts them per matmul): half the memory; native bf16 matmuls on CUDA and on CPUs
             with AVX512-BF16 or AMX, emulated (slow) elsewhere.
  int8_cuda  bitsandbytes LLM.int8() (8-bit weights, outlier features in fp16), CUDA.
  nf4        bitsandbytes 4-bit NormalFloat with double quantization and bf16 compute (QLoRA's base), CUDA.
  gguf       llama.cpp (llama-cpp-python) on a GGUF file of the model: one written at q8_0/f16/f32
             by tunewise's GGUF writer (finetune/gguf_export.py), or the model's own file as shipped.

Weight memory (`weight_bytes`) counts what the weights take in memory: parameters and buffers, a
tied tensor once, plus the packed int8 weights of dynamically quantized layers (not parameters);
for GGUF, the file's size (llama.cpp maps it).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError
from tunewise.models.base import ChatModel


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    """How the weights are held, for titles: "int8 dynamic (torch)"."""
    device: str
    """Where it runs: "cpu", "cuda" or "any"."""


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("bf16", "bf16 weights", "any"),
        Method("int8", "int8 dynamic (torch)", "cpu"),
        Method("int8_weight", "int8 weight-only", "cpu"),
        Method("int8_cuda", "int8 (bitsandbytes)", "cuda"),
        Method("nf4", "4-bit NF4 (bitsandbytes)", "cuda"),
        Method("gguf", "GGUF (llama.cpp)", "cpu"),
    )
}

GGUF_TYPES = ("q8_0", "f16", "f32", "source")
"""`ladder.quantize.gguf_type`: a type tunewise's GGUF writer writes, or the model's own GGUF file."""

INT8_KEEP_HEAD = True
"""Keep the output head (lm_head) in full precision under int8. It maps the last hidden state to the
vocabulary, where a rounding error picks a different next token directly; bitsandbytes and most
int8 recipes leave it unquantized for that reason (measured on the embedded model: docs/quantize.md)."""

INSTALL_BNB = "run it on a CUDA machine with `pip install bitsandbytes`, or measure quantized_int8 / quantized_bf16 on CPU"
INSTALL_LLAMA_CPP = "`pip install llama-cpp-python` (it compiles llama.cpp: minutes)"


@dataclass
class Quantization:
    """What `quantize` did, for the rung's facts and the report."""

    method: str
    label: str
    weight_bytes: int
    base_weight_bytes: int
    base_name: str
    seconds: float
    """Wall time to build the quantized copy (once per run)."""
    detail: str = ""
    """More about the weights, e.g. which GGUF file."""


# -- availability -------------------------------------------------------------------------------------


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def method_unavailable(
    method: str, spec: str, *, endpoint: bool = False, engine: str | None = None, gguf_type: str = "q8_0"
) -> str | None:
    """Why `method` cannot quantize the model `spec` here, or None when it can.

    >>> method_unavailable("int8", "openai:gpt-4o-mini", endpoint=True)
    'openai:gpt-4o-mini is reached over HTTP (an OpenAI-compatible endpoint): its weights are not here to quantize'
    """
    if method not in METHODS:
        raise TunewiseError(f"unknown quantization method {method!r}; valid: {', '.join(METHODS)}")
    if endpoint or spec.startswith("openai:"):
        return f"{spec} is reached over HTTP (an OpenAI-compatible endpoint): its weights are not here to quantize"
    if engine == "vllm":
        return ("model_options.engine is vllm: the quantized rungs quantize a transformers model; "
                "measure them with engine: transformers (vLLM serves AWQ/GPTQ checkpoints of its own)")
    if importlib.util.find_spec("torch") is None:
        return "needs torch: pip install 'tunewise[ml]'"
    cuda = _cuda()
    if method in ("int8", "int8_weight"):
        import torch

        if cuda:
            return (f"{METHODS[method].label} quantization runs on CPU only, and this model runs on the CUDA GPU: "
                    "measure quantized_int8_cuda or quantized_nf4 (bitsandbytes) there instead")
        if method == "int8" and not {"x86", "fbgemm", "onednn", "qnnpack"} & set(torch.backends.quantized.supported_engines):
            return "this torch build has no quantized CPU kernels (torch.backends.quantized.supported_engines is empty)"
        if method == "int8_weight" and not hasattr(torch, "_weight_int8pack_mm"):
            return f"torch {torch.__version__} has no int8-weight matmul kernel (torch._weight_int8pack_mm): upgrade torch (2.3 or later)"
    if method in ("int8_cuda", "nf4"):
        missing = [what for what, ok in (("a CUDA GPU", cuda), ("the bitsandbytes package", _has("bitsandbytes"))) if not ok]
        if missing:
            return f"bitsandbytes quantization needs a CUDA GPU and the bitsandbytes package; missing: {' and '.join(missing)}: {INSTALL_BNB}"
    if method == "gguf":
        if not _has("llama_cpp"):
            return f"needs a GGUF runtime, and llama-cpp-python is not installed: {INSTALL_LLAMA_CPP}"
        if gguf_type not in GGUF_TYPES:
            raise TunewiseError(f"unknown GGUF type {gguf_type!r}; valid: {', '.join(GGUF_TYPES)}")
        if spec != "embedded" and not spec.lower().endswith(".gguf"):
            return (f"a GGUF is written with the metadata of the model's own GGUF file, and {spec} is not a GGUF model "
                    "(embedded or a .gguf): convert it with llama.cpp's convert_hf_to_gguf.py and give the .gguf as model:")
    return None


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# -- quantize -----------------------------------------------------------------------------------------

_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[str, str | None], ChatModel]] = weakref.WeakKeyDictionary()
"""Loaded model -> (method, GGUF type) -> its quantized copy; dropped with the model."""


def quantize(model: ChatModel, method: str, gguf_type: str = "q8_0") -> ChatModel:
    """A copy of `model` (a local TransformersModel) with quantized weights, as a ChatModel whose
    `quantization` attribute says what was done. `model` itself is left as it was.

    Built once per model and method: asking again returns the same copy.
    """
    from tunewise.models.hf import TransformersModel

    if method not in METHODS:
        raise TunewiseError(f"unknown quantization method {method!r}; valid: {', '.join(METHODS)}")
    if not isinstance(model, TransformersModel):
        raise TunewiseError(
            f"cannot quantize {model.name!r}: the quantized rungs quantize a local transformers model (embedded, a "
            f"folder, a .gguf or a hub id), and this one is a {type(model).__name__}"
        )
    key = (method, gguf_type if method == "gguf" else None)
    done = _CACHE.setdefault(model, {})
    if key not in done:
        started = time.perf_counter()
        built, detail = BUILDERS[method](model, gguf_type)
        base_bytes = weight_bytes(model.model)
        own = built.weight_bytes if hasattr(built, "weight_bytes") else weight_bytes(built.model)
        built.quantization = Quantization(
            method, METHODS[method].label, own, base_bytes, model.name, time.perf_counter() - started, detail
        )
        done[key] = built
    return done[key]


def _same_settings(base: Any, module: Any, method: str, precision: str) -> Any:
    """A TransformersModel over `module` with `base`'s tokenizer and batching. bf16 autocast is off:
    the weights say the precision now (and int8 layers take fp32 activations only)."""
    from tunewise.models.hf import TransformersModel

    out = TransformersModel(
        module, base.tokenizer, f"{base.name} ({METHODS[method].label})", device=str(next(module.parameters()).device),
        bf16="off", max_batch_tokens=base.max_batch_tokens, max_batch_size=base.max_batch_size,
    )
    out.precision = precision
    return out


def _bf16(model: Any, gguf_type: str) -> tuple[Any, str]:
    import torch

    # Cast a copy: the shared base model keeps its fp32 weights for the unquantized rungs. Parameters
    # only: `module.to(bfloat16)` would also round the rotary embedding's inverse frequencies (a
    # buffer), which a model loaded in bf16 keeps in fp32.
    module = copy.deepcopy(model.model)
    for param in module.parameters():  # a tied weight is one parameter: it stays tied
        param.data = param.data.to(torch.bfloat16)
    return _same_settings(model, module, "bf16", "bf16 weights"), ""


def _on_cpu(model: Any, method: str) -> None:
    import torch

    if torch.device(model.device).type != "cpu":
        raise TunewiseError(
            f"{METHODS[method].label} quantization runs on CPU only, and {model.name} runs on {model.device}: "
            "use quantized_int8_cuda or quantized_nf4 (bitsandbytes) on a GPU"
        )


def _int8(model: Any, gguf_type: str) -> tuple[Any, str]:
    import torch

    _on_cpu(model, "int8")
    module = copy.deepcopy(model.model)
    head = module.get_output_embeddings() if INT8_KEEP_HEAD else None
    names = {name for name, m in module.named_modules() if isinstance(m, torch.nn.Linear) and m is not head}
    with warnings.catch_warnings():
        # torch.ao.quantization warns that it moves to torchao; it is still the int8 CPU path that
        # ships with torch (torchao is another install), and it runs on fbgemm/oneDNN kernels.
        warnings.filterwarnings("ignore", message=r".*deprecated.*")
        # One weight scale per tensor, torch's default: per output channel scored lower still on
        # few-shot intent (0.16 against 0.24 of fp32's 0.50, 120 examples), the activations' rounding
        # being the larger error either way.
        qconfig = torch.ao.quantization.default_dynamic_qconfig
        torch.ao.quantization.quantize_dynamic(module, {name: qconfig for name in names}, dtype=torch.qint8, inplace=True)
    kept = " (output head kept in fp32)" if head is not None else ""
    return _same_settings(model, module, "int8", "int8 weights, int8 dynamic activations"), f"{len(names)} linear layers{kept}"


def _int8_weight(model: Any, gguf_type: str) -> tuple[Any, str]:
    import torch

    from tunewise.models.int8_weight import replace_linears

    _on_cpu(model, "int8_weight")
    module = copy.deepcopy(model.model)
    # bf16 everywhere else too, so activations reach the int8 kernel in bf16, its fast path (with
    # fp32 activations the same kernel ran ~35x slower here); the rotary buffer stays fp32, as in _bf16.
    for param in module.parameters():
        param.data = param.data.to(torch.bfloat16)
    head = module.get_output_embeddings() if INT8_KEEP_HEAD else None
    swapped = replace_linears(module, {id(head)} if head is not None else set())
    kept = " (output head kept in bf16)" if head is not None else ""
    return _same_settings(model, module, "int8_weight", "int8 weights, bf16 activations"), f"{swapped} linear layers{kept}"


def _bitsandbytes(model: Any, four_bit: bool) -> tuple[Any, str]:
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    # The weights are read again from the folder the model was loaded from (the GGUF cache for the
    # embedded model), quantized as they load: how bitsandbytes is meant to be used, and how the
    # qlora training base is loaded (finetune/train.py).
    source = getattr(model.model.config, "_name_or_path", "")
    if not source or not (Path(source).is_dir() or "/" in source):
        raise TunewiseError(
            f"cannot quantize {model.name} with bitsandbytes: it was not loaded from a folder or hub id "
            f"(config._name_or_path is {source!r}); load it with `model:` set to a folder, a .gguf or a hub id"
        )
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if four_bit:
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=compute)
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    module = AutoModelForCausalLM.from_pretrained(source, quantization_config=config, dtype=compute, use_safetensors=True,
                                                  device_map={"": torch.cuda.current_device()})
    method = "nf4" if four_bit else "int8_cuda"
    precision = "nf4 weights, bf16 compute" if four_bit else "int8 weights (LLM.int8)"
    return _same_settings(model, module, method, precision), f"from {source}"


def _int8_cuda(model: Any, gguf_type: str) -> tuple[Any, str]:
    _check_bnb()
    return _bitsandbytes(model, four_bit=False)


def _nf4(model: Any, gguf_type: str) -> tuple[Any, str]:
    _check_bnb()
    return _bitsandbytes(model, four_bit=True)


def _check_bnb() -> None:
    why = method_unavailable("nf4", "local")
    if why:
        raise TunewiseError(why)


def _gguf(model: Any, gguf_type: str) -> tuple[Any, str]:
    from tunewise.models.llamacpp import LlamaCppModel

    if not _has("llama_cpp"):
        raise TunewiseError(f"needs a GGUF runtime, and llama-cpp-python is not installed: {INSTALL_LLAMA_CPP}")
    path = gguf_file(model, gguf_type)
    built = LlamaCppModel(path, model.tokenizer, f"{model.name} ({path.name})", eos_ids=model.eos_ids)
    return built, f"{path.name}, {gguf_type if gguf_type != 'source' else 'as shipped'}"


def gguf_file(model: Any, gguf_type: str) -> Path:
    """The GGUF file llama.cpp runs for `model` at `gguf_type`: the model's own GGUF ("source"), or
    one written from its weights next to its dequantised cache (built once, atomically)."""
    if gguf_type not in GGUF_TYPES:
        raise TunewiseError(f"unknown GGUF type {gguf_type!r}; valid: {', '.join(GGUF_TYPES)}")
    folder = Path(getattr(model.model.config, "_name_or_path", "") or ".")
    marker = folder / "tunewise-cache.json"
    try:
        source = Path(json.loads(marker.read_text())["source"])
    except (OSError, ValueError, KeyError, TypeError):
        raise TunewiseError(
            f"{model.name} was not loaded from a GGUF file (no {marker.name} in {folder}): GGUF levels need a GGUF "
            "model (embedded or a .gguf path) whose metadata the new file takes"
        ) from None
    if not source.is_file():
        raise TunewiseError(f"the GGUF file {source} that {model.name} was loaded from is gone; load the model again")
    if gguf_type == "source":
        return source
    from tunewise.finetune.gguf_export import write_gguf

    out = folder.parent / f"{folder.name}.{gguf_type}.gguf"
    if not out.is_file():
        write_gguf(model.model, source, out, outtype=gguf_type, name=f"{source.stem} {gguf_type}")
    return out


BUILDERS = {"bf16": _bf16, "int8": _int8, "int8_weight": _int8_weight, "int8_cuda": _int8_cuda, "nf4": _nf4, "gguf": _gguf}


# -- memory -------------------------------------------------------------------------------------------


def weight_bytes(module: Any) -> int:
    """Bytes the weights of a torch module take in memory: parameters and buffers (a tied tensor
    counted once), plus the int8 weights, biases and scales of dynamically quantized linear layers,
    which are not parameters (counted once: a kernel library's packed layout may keep more).
    bitsandbytes 4-bit weights count their packed bytes.

    >>> import torch
    >>> weight_bytes(torch.nn.Linear(4, 2))  # 8 weights + 2 biases, fp32
    40
    """
    import torch

    total = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    packed = getattr(getattr(torch.ao.nn.quantized, "dynamic", None), "Linear", None)
    for m in module.modules():
        if packed is not None and isinstance(m, packed):
            weight, bias = m._packed_params._weight_bias()
            total += weight.numel() * weight.element_size()
            if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                total += weight.q_per_channel_scales().numel() * 8  # a float32 scale and an int32 zero point each
            if bias is not None:
                total += bias.numel() * bias.element_size()
    return int(total)
