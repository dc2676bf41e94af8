"""What this CPU is and what it can compute, read once per process from /proc/cpuinfo.

Both the device's profile cache (keyed by the CPU's name) and the runtime choice (the name,
and the flags that say whether int8 or bf16/f16 pay) need it; an ``auto`` start asked
several times, each reading the whole file (one block per core).
"""

from __future__ import annotations

import functools
import platform


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The fields of /proc/cpuinfo, the last core's where cores repeat them; {} elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            pairs = [line.split(":", 1) for line in f if ":" in line]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, v in pairs}


def cpu_model() -> str:
    """The CPU's name as the OS reports it ("" when it does not)."""
    fields = _cpuinfo()
    for name in ("model name", "Model", "Hardware", "CPU part", "cpu model"):
        if fields.get(name):
            return fields[name]
    return platform.processor()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (x86 ``flags``, ARM ``Features``); empty where unknown."""
    fields = _cpuinfo()
    return set((fields.get("flags") or fields.get("Features") or "").split())
