"""Quantised and low-precision linears, one owner for the decoder (`engine.fastdecode`) and the MAA scorer's
fast CPU path (`engine.maa_fast`): fbgemm int8 packing (weights symmetric per output channel, activations
quantised per call), fbgemm fp16 panels, bf16 and float32 snapshots, and whether this torch build has the
kernels. Every linear here is a snapshot of the weights: build a new one after they change.

This module must never import Qt.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

__all__ = ["BF16Linear", "FloatLinear", "Int8Linear", "PackedLinear", "fp16_weights_available", "int8_pack",
           "int8_weights_available"]


def fp16_weights_available() -> bool:
    """True when this torch build has the fbgemm fp16-weight linear kernels (x86 CPU builds)."""
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        return False
    try:
        packed = torch.ops.quantized.linear_prepack_fp16(torch.zeros(8, 8))
        torch.ops.quantized.linear_dynamic_fp16(torch.zeros(1, 8), packed)
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return True


def int8_pack(weight: torch.Tensor):
    """fbgemm int8 panels of a float32 [out, in] weight, symmetric per output channel."""
    w = weight.detach().float().contiguous()
    scales = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-8).double()
    zero_points = torch.zeros(w.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # torch flags quantized-tensor creation as deprecated; fbgemm still serves it
        warnings.simplefilter("ignore")
        q = torch.quantize_per_channel(w, scales, zero_points, 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(q, None)


def int8_weights_available() -> bool:
    """True when this torch build has the fbgemm int8 dynamic linear kernels (x86 CPU builds)."""
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        return False
    try:
        torch.ops.quantized.linear_dynamic(torch.zeros(1, 8), int8_pack(torch.ones(8, 8)), True)
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return True


class PackedLinear:
    """A bias-free linear over the live weight (exact) or an fbgemm fp16 / int8 packed snapshot."""

    __slots__ = ("weight", "packed", "mode")

    def __init__(self, weight: torch.Tensor, mode: str):
        self.weight, self.mode, self.packed = weight, mode, None
        if mode == "fp16":
            self.packed = torch.ops.quantized.linear_prepack_fp16(weight)
        elif mode == "int8":
            self.packed = int8_pack(weight)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "fp16":
            return torch.ops.quantized.linear_dynamic_fp16(x, self.packed)
        if self.mode == "int8":
            # reduce_range: 7-bit activations, as torch's own dynamic quantization does on x86.
            return torch.ops.quantized.linear_dynamic(x, self.packed, True)
        return F.linear(x, self.weight)



class Int8Linear:
    """``F.linear`` through fbgemm: weight int8 per output channel, activations quantized per call.
    Float32 out."""

    __slots__ = ("packed", "bias", "reduce_range")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, reduce_range: bool):
        self.packed = int8_pack(weight)
        self.bias = None if bias is None else bias.detach().float().clone()
        self.reduce_range = reduce_range

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        # One quantization scale per window (B, T, C): a window's result never depends on the loudness
        # of the windows batched with it.
        if len(x) == 1:
            y = torch.ops.quantized.linear_dynamic(x[0], self.packed, self.reduce_range).unsqueeze(0)
        else:
            y = torch.stack([torch.ops.quantized.linear_dynamic(w, self.packed, self.reduce_range) for w in x])
        return y if self.bias is None else y.add_(self.bias)


class FloatLinear:
    """Plain float32 ``F.linear`` over a snapshot, for FastCPUForward(precision="float32")."""

    __slots__ = ("weight", "bias")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight = weight.detach().float().contiguous()
        self.bias = None if bias is None else bias.detach().float().clone()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class BF16Linear:
    """``F.linear`` with bf16 weights and inputs (float32 accumulation), bf16 out: the next matmul or
    GELU reads bf16 anyway, and a float32 copy of a (T, 3072) output costs more than the GELU."""

    __slots__ = ("weight", "bias")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight = weight.detach().to(torch.bfloat16).contiguous()
        self.bias = None if bias is None else bias.detach().to(torch.bfloat16).clone()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias)
