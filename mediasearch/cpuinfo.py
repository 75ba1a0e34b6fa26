"""What the CPU can do: its vector extensions (``/proc/cpuinfo``) and any cap set on oneDNN's kernels.

Both the image tower (``clip.image_runtime``) and the OCR detector (``ocr.engine``) run bf16 only where
the CPU multiplies bf16 natively; a cap (``ONEDNN_MAX_CPU_ISA=AVX2``, how an AVX2-only CPU is emulated
here) counts as the CPU having no more than it allows.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

# oneDNN ISA caps below which no bf16 kernel runs
CAPS_WITHOUT_BF16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"})


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX (x86), BF16 (Arm): CPUs that run bf16 matrix products at full speed, unless
    oneDNN is capped below them (``ONEDNN_MAX_CPU_ISA``, e.g. AVX2: how an AVX2-only CPU is emulated)."""
    if isa_cap() in CAPS_WITHOUT_BF16:
        return False
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def isa_cap() -> str:
    """The cap on oneDNN's instruction set from the environment, upper case ("" when none)."""
    return (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()


def cpu_flags() -> set[str]:
    """The first CPU's feature flags (x86 ``flags``, Arm ``Features``); empty where unreadable."""
    return set(_flags())


@functools.lru_cache(maxsize=1)
def _flags() -> frozenset[str]:
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return frozenset()
    for line in lines:
        if line.startswith(("flags", "Features")):
            return frozenset(line.partition(":")[2].split())
    return frozenset()
