"""What this machine's CPU can do natively, for choosing a precision (torch-free).

Read once from /proc/cpuinfo (Linux); elsewhere nothing is known and every answer is False, which only
ever selects the slower, exact paths.
"""

from __future__ import annotations

import functools

__all__ = ["cpu_flags", "native_bf16", "int8_vnni"]


@functools.cache
def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16() -> bool:
    """bf16 matrix instructions (AVX512-BF16 or AMX-BF16): bf16 matmuls run ~2× float32 instead of
    being emulated (which makes them several times slower)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def int8_vnni() -> bool:
    """x86 VNNI (AVX512-VNNI / AVX-VNNI): fbgemm's int8 kernels accumulate in int32 without the int16
    saturation that forces 7-bit activations (``reduce_range``) on older CPUs."""
    return bool({"avx512_vnni", "avx_vnni"} & cpu_flags())
