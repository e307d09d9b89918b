"""GPU memory and time to fine-tune: back-of-the-envelope formulas, no torch.

Memory is in GB of 1e9 bytes (the convention of the "16 bytes per parameter" rule); it leaves out
the CUDA context (about 0.5-1 GB), the allocator's fragmentation and the logits, which for small
models with large vocabularies can be the peak (seq x batch x vocab x 4 bytes). Formulas:
docs/cost.md.

>>> round(training_memory_gb(7e9, 512, 1, "full", n_layers=32, hidden=4096)["total"], 2)
114.28
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from tunewise.errors import TunewiseError

BYTES_PER_GB = 1e9
METHODS = ("full", "lora", "qlora")

ADAM_BYTES_PER_PARAM = 8  # AdamW keeps two fp32 states (m, v) per trainable parameter
MASTER_BYTES_PER_PARAM = 4  # fp32 master weights when training in 16-bit
NF4_BYTES_PER_PARAM = 0.5  # QLoRA's 4-bit NormalFloat
# Quantisation constants with double quantisation (QLoRA paper, section 3): an 8-bit absmax per
# block of 64 weights plus an fp32 constant per 256 blocks = 0.127 bits per parameter.
NF4_CONSTANT_BYTES_PER_PARAM = (8 / 64 + 32 / (64 * 256)) / 8
ACTIVATION_BYTES_FACTOR = 34  # Korthikanti et al. 2022: 34 x seq x batch x hidden bytes per layer (16-bit)
DEFAULT_LORA_R = 16


@dataclass(frozen=True)
class Shape:
    """A reference architecture used when the layer count or width is not given."""

    name: str
    params: float
    n_layers: int
    hidden: int
    intermediate: int


REFERENCE_SHAPES: tuple[Shape, ...] = (
    Shape("SmolLM2-135M", 135e6, 30, 576, 1536),
    Shape("SmolLM2-360M", 360e6, 32, 960, 2560),
    Shape("Qwen2.5-0.5B", 494e6, 24, 896, 4864),
    Shape("SmolLM2-1.7B", 1.7e9, 24, 2048, 8192),
    Shape("Llama-3.2-3B", 3.2e9, 28, 3072, 8192),
    Shape("Llama-2-7B", 6.7e9, 32, 4096, 11008),
    Shape("Llama-3.1-8B", 8.0e9, 32, 4096, 14336),
    Shape("Llama-2-13B", 13e9, 40, 5120, 13824),
    Shape("Qwen2.5-32B", 32.5e9, 64, 5120, 27648),
    Shape("Llama-3.1-70B", 70.6e9, 80, 8192, 28672),
)

EMBEDDED_PARAMS = 135e6  # the embedded model, SmolLM2-135M-Instruct

_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}
_COUNT = re.compile(r"^\s*(\d+(?:\.\d*)?(?:e\d+)?)\s*([kmbt]?)\s*$", re.IGNORECASE)


def parse_param_count(value: str | int | float) -> int:
    """A parameter count from "135M", "1.5B", "7b", "7e9" or a number.

    >>> parse_param_count("135M"), parse_param_count("1.5B"), parse_param_count(7e9)
    (135000000, 1500000000, 7000000000)
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        count = float(value)
    else:
        match = _COUNT.match(str(value).replace(",", "").replace("_", ""))
        if not match:
            raise TunewiseError(
                f"unknown parameter count {value!r}; write it like 135M, 1.5B, 7B or 7000000000"
            )
        count = float(match.group(1)) * _SUFFIX[match.group(2).lower()]
    if not math.isfinite(count) or count < 1:
        raise TunewiseError(f"a parameter count must be at least 1; got {value!r}")
    return round(count)


def params_from_model_name(name: str) -> int | None:
    """Guess a model's size from its name ("meta-llama/Llama-3.1-8B" -> 8e9); None when it says none.

    >>> params_from_model_name("HuggingFaceTB/SmolLM2-360M-Instruct"), params_from_model_name("gpt-4o")
    (360000000, None)
    """
    if name == "embedded":
        return round(EMBEDDED_PARAMS)
    found = re.findall(r"(?<![\w.])(\d+(?:\.\d+)?)([mb])(?![a-z])", name.lower().replace("_", "-"))
    return round(float(found[-1][0]) * _SUFFIX[found[-1][1]]) if found else None


def nearest_shape(params: float) -> Shape:
    """The reference architecture closest in size (on a log scale)."""
    return min(REFERENCE_SHAPES, key=lambda s: abs(math.log(s.params / params)))


def lora_param_count(n_layers: int, hidden: int, intermediate: int, r: int = DEFAULT_LORA_R) -> int:
    """Trainable parameters of LoRA on every linear layer of a Llama-style block.

    A rank-r adapter on a (d_in -> d_out) matrix adds r x (d_in + d_out). Per layer: q, k, v, o
    (hidden -> hidden) give 8 r hidden; gate and up (hidden -> intermediate) and down give
    3 r (hidden + intermediate). Grouped-query attention makes k and v smaller: this overcounts a little.

    >>> lora_param_count(32, 4096, 11008, 16)  # Llama-2-7B, r=16
    39976960
    """
    return r * n_layers * (11 * hidden + 3 * intermediate)


def activation_bytes(
    seq_len: int, batch_size: int, hidden: int, n_layers: int, gradient_checkpointing: bool = False, compute_bytes: int = 2
) -> float:
    """Activations kept for the backward pass (Korthikanti et al. 2022, without the attention-score
    term that flash/SDPA attention never materialises): 34 x seq x batch x hidden bytes per layer in
    16-bit. With gradient checkpointing each layer keeps only its input (2 x seq x batch x hidden),
    and one layer's full activations exist while it is recomputed."""
    per_layer_full = ACTIVATION_BYTES_FACTOR * seq_len * batch_size * hidden * compute_bytes / 2
    if gradient_checkpointing:
        return n_layers * compute_bytes * seq_len * batch_size * hidden + per_layer_full
    return n_layers * per_layer_full


def training_memory_gb(
    params: float,
    seq_len: int,
    batch_size: int,
    method: str = "full",
    lora_params: float | None = None,
    n_layers: int | None = None,
    hidden: int | None = None,
    *,
    intermediate: int | None = None,
    lora_r: int = DEFAULT_LORA_R,
    compute_bytes: int = 2,
    gradient_checkpointing: bool = False,
) -> dict[str, float]:
    """GPU memory to fine-tune, as a breakdown in GB: weights, gradients, optimizer, activations, total
    (plus `trainable_params`, a count).

    full:  compute_bytes weights + compute_bytes grads + 4 master (if 16-bit) + 8 Adam per param
           (16 bytes/param in bf16 mixed precision).
    lora:  frozen weights at compute_bytes/param + 16 bytes per trainable LoRA param.
    qlora: 0.5 byte/param (NF4) + 0.0159 byte/param constants + 16 bytes per LoRA param.
    Activations: `activation_bytes`. Missing n_layers / hidden / intermediate come from the nearest
    reference model; lora_params defaults to `lora_param_count` for rank `lora_r`.
    """
    problems = []
    if method not in METHODS:
        problems.append(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    for name, value in (("params", params), ("seq_len", seq_len), ("batch_size", batch_size), ("lora_r", lora_r)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 1:
            problems.append(f"{name} must be >= 1 (got {value!r})")
    for name, value in (("lora_params", lora_params), ("n_layers", n_layers), ("hidden", hidden), ("intermediate", intermediate)):
        if value is not None and (not isinstance(value, (int, float)) or value < 0):
            problems.append(f"{name} must be >= 0 (got {value!r})")
    if compute_bytes not in (2, 4):
        problems.append(f"compute_bytes must be 2 (bf16/fp16) or 4 (fp32), got {compute_bytes!r}")
    if problems:
        raise TunewiseError("cannot estimate training memory: " + "; ".join(problems))

    shape = nearest_shape(params)
    n_layers = shape.n_layers if n_layers is None else n_layers
    if intermediate is None:
        # The reference model's MLP width, or SwiGLU's usual 8/3 x hidden for a width given by hand.
        intermediate = shape.intermediate if hidden is None else round(8 * hidden / 3)
    hidden = shape.hidden if hidden is None else hidden

    if method == "full":
        trainable = params
        weights = compute_bytes * params
        frozen = 0.0
    else:
        trainable = lora_param_count(n_layers, hidden, intermediate, lora_r) if lora_params is None else lora_params
        per_frozen = compute_bytes if method == "lora" else NF4_BYTES_PER_PARAM + NF4_CONSTANT_BYTES_PER_PARAM
        frozen = per_frozen * params
        weights = frozen + compute_bytes * trainable
    master = MASTER_BYTES_PER_PARAM if compute_bytes < 4 else 0
    breakdown_bytes = {
        "weights": weights,
        "gradients": compute_bytes * trainable,
        "optimizer": (master + ADAM_BYTES_PER_PARAM) * trainable,
        "activations": activation_bytes(seq_len, batch_size, hidden, n_layers, gradient_checkpointing, compute_bytes),
    }
    out = {k: v / BYTES_PER_GB for k, v in breakdown_bytes.items()}
    out["total"] = sum(out.values())
    out["trainable_params"] = int(trainable)
    return out


def memory_by_method(params: float, seq_len: int, batch_size: int, **options) -> dict[str, dict[str, float]]:
    """`training_memory_gb` for full, LoRA and QLoRA side by side."""
    return {m: training_memory_gb(params, seq_len, batch_size, m, **options) for m in METHODS}


def training_flops(params: float, tokens: float) -> float:
    """6 x params x tokens: 2 for the forward pass, 4 for the backward (Kaplan et al. 2020)."""
    return 6 * params * tokens


def training_time_estimate(params: float, tokens: float, gpu_tflops: float, mfu: float = 0.4) -> float:
    """Seconds to train on `tokens` (all epochs) at `mfu` of the GPU's peak dense TFLOPS.

    >>> training_time_estimate(1e9, 1e6, 100, mfu=0.5)  # 6e15 FLOPs / 5e13 FLOP/s
    120.0
    """
    def bad(value: float, low: float, high: float = math.inf, low_ok: bool = True) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return True
        return value > high or value < low or (value == low and not low_ok)

    problems = [
        f"{name} must be {rule} (got {value!r})"
        for name, value, rule, is_bad in (
            ("params", params, ">= 0", bad(params, 0)),
            ("tokens", tokens, ">= 0", bad(tokens, 0)),
            ("gpu_tflops", gpu_tflops, "> 0", bad(gpu_tflops, 0, low_ok=False)),
            ("mfu", mfu, "in (0, 1]", bad(mfu, 0, 1, low_ok=False)),
        )
        if is_bad
    ]
    if problems:
        raise TunewiseError("cannot estimate training time: " + "; ".join(problems))
    return training_flops(params, tokens) / (gpu_tflops * 1e12 * mfu)
