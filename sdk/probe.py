"""What this device can do: cores, memory, load, battery, and the measured speed of its SR."""

from __future__ import annotations

import os
import platform
import time

import numpy as np
import psutil

from hybridsr.imaging.lightsr import DeviceSR, create_backend
from hybridsr.imaging.tiles import Tile, upscale_tile
from hybridsr.protocol import DeviceProfile
from hybridsr.sdk.profile_cache import ProfileCache, profile_cache


def benchmark_backend(backend: DeviceSR, tile: int = 32, scale: int = 4, repeats: int = 2
                      ) -> float:
    """Milliseconds per LR pixel read by `backend`, as a job uses it (best of `repeats`).

    A job upscales each region of adjacent tiles together with `backend.context` pixels of
    surroundings; the figure is per pixel read (region and context), which is what the
    planner multiplies by each region's `read_px`.
    """
    rng = np.random.default_rng(0)
    side = tile + 2 * backend.context
    image = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    centre = Tile(0, backend.context, backend.context, tile, tile)
    upscale_tile(image, centre, scale, backend.upscale, context=backend.context)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        upscale_tile(image, centre, scale, backend.upscale, context=backend.context)
        best = min(best, time.perf_counter() - t0)
    return best * 1000.0 / (side * side)


def measured_speed(backend: DeviceSR, cache: ProfileCache | None) -> float:
    """ms per LR pixel read (region plus context): from `cache` when it holds a fresh figure,
    else benchmarked now (and stored)."""
    entry = cache.get(backend) if cache is not None else None
    if entry is not None:
        return entry.sr_ms_per_lr_pixel
    speed = benchmark_backend(backend)
    if cache is not None:
        cache.put(backend, speed)
    return speed


def probe_device(backend: DeviceSR | None = None, benchmark: bool = True,
                 cache: ProfileCache | bool = True) -> DeviceProfile:
    """This device's profile. The SR speed comes from the per-device cache when fresh
    (`cache=True`: the default file; False: benchmark now and store nothing);
    `benchmark=False` leaves it unknown."""
    backend = backend or create_backend()
    store = profile_cache() if cache is True else (cache or None)
    memory = psutil.virtual_memory()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        load = None
    battery = None
    try:
        battery = psutil.sensors_battery()
    except Exception:  # not every platform exposes it
        pass
    return DeviceProfile(
        cores=psutil.cpu_count(logical=True) or 1,
        memory_total_mb=round(memory.total / 2**20, 1),
        memory_available_mb=round(memory.available / 2**20, 1),
        load_1m=load,
        battery_percent=float(battery.percent) if battery else None,
        power_plugged=bool(battery.power_plugged) if battery else None,
        platform=f"{platform.system()}-{platform.machine()}",
        sr_backend=backend.name,
        sr_ms_per_lr_pixel=measured_speed(backend, store) if benchmark else None,
        sr_context=backend.context,
    )
