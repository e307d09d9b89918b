"""Weight-only int8 linear layers for CPU: int8 weights with one scale per output channel, bf16
activations, multiplied by torch's `_weight_int8pack_mm` kernel (the one torchao's int8 weight-only
quantization calls on CPU) without ever holding the dequantized weight.

Unlike dynamic quantization (torch.ao quantize_dynamic), activations are never rounded to int8: the
only error is the weights' rounding, which is what keeps answers close to the full-precision model
(docs/quantize.md has the measurements). Imported only by models/quantize.py, when asked for.
"""

from __future__ import annotations

import torch


class Int8WeightLinear(torch.nn.Module):
    """y = x @ (q * scale)^T + bias, with q (out, in) int8 and scale (out,) in the activations' dtype.

    Symmetric rounding per output row: scale = max|w| / 127, q = round(w / scale).
    """

    def __init__(self, linear: torch.nn.Linear, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        weight = linear.weight.detach().float()  # (out, in)
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # (out,)
        self.register_buffer("qweight", torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(dtype))
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach().to(dtype), requires_grad=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(self.scale.dtype).contiguous()  # (tokens, in)
        y = torch._weight_int8pack_mm(rows, self.qweight, self.scale)  # (tokens, out)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights, {self.scale.dtype} activations"


def replace_linears(module: torch.nn.Module, keep: set[int], dtype: torch.dtype = torch.bfloat16) -> int:
    """Swap every nn.Linear under `module` whose id is not in `keep` for an Int8WeightLinear, in place;
    returns how many were swapped."""
    swapped = 0
    for name, child in list(module.named_children()):
        if isinstance(child, torch.nn.Linear) and id(child) not in keep:
            setattr(module, name, Int8WeightLinear(child, dtype))
            swapped += 1
        else:
            swapped += replace_linears(child, keep, dtype)
    return swapped


def supported() -> bool:
    """This torch build has the CPU kernel."""
    return hasattr(torch, "_weight_int8pack_mm")
