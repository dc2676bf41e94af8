"""The device's measured SR speed, kept on disk per device, model and runtime.

Measuring it costs a benchmark (about 1 s on a laptop, about a minute on an emulated Pi), so
one CLI call or app start should not pay it again: the figure is stored under the cache dir
(`device-profile.json`; `$HYBRIDSR_PROFILE_CACHE` names another file, `off` disables), keyed
by what it depends on, refreshed by every real job's observed speed, and re-measured once
it is older than `max_age_s` (a week by default).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hybridsr.imaging.cpu import cpu_model
from hybridsr.imaging.lightsr import DeviceSR

DEFAULT_MAX_AGE_S = 7 * 24 * 3600.0
JOB_WEIGHT = 0.5  # a job's speed moves the stored figure halfway: one odd job does not rule


@dataclass
class SpeedEntry:
    sr_ms_per_lr_pixel: float
    measured_at: float  # time.time() of the last benchmark or job that set it
    source: str  # "benchmark" | "job"
    jobs: int = 0  # real jobs folded in since the last benchmark


def device_key() -> str:
    return f"{platform.system()}-{platform.machine()}|{cpu_model()}|{os.cpu_count() or 1} cpus"


def runtime_key(backend: DeviceSR) -> str:
    """The model and what runs it: a new runtime version may change the speed."""
    runtime = getattr(backend, "runtime", None)
    if runtime is None and backend.name == "lanczos":
        import PIL

        runtime = f"pillow {PIL.__version__}"
    elif runtime is None:
        try:
            import onnxruntime

            runtime = f"onnxruntime {onnxruntime.__version__}"
        except ImportError:
            runtime = type(backend).__name__
    threads = getattr(backend, "threads", None)
    return f"{backend.name}|{runtime}|threads={threads or 'default'}"


class ProfileCache:
    """One JSON file of `SpeedEntry`s; every write is atomic (temp file + rename)."""

    def __init__(self, path: str | Path | None = None,
                 max_age_s: float = DEFAULT_MAX_AGE_S) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.max_age_s = max_age_s

    def key(self, backend: DeviceSR) -> str:
        # "read-px": the unit (ms per LR pixel read, context included); figures stored per
        # tile pixel by earlier versions are not reused.
        return f"{device_key()}|{runtime_key(backend)}|read-px"

    def get(self, backend: DeviceSR) -> SpeedEntry | None:
        """The stored speed for this device, model and runtime; None if missing or stale."""
        raw = self._load().get(self.key(backend))
        try:
            entry = SpeedEntry(**raw) if isinstance(raw, dict) else None
        except TypeError:
            return None
        if entry is None or not entry.sr_ms_per_lr_pixel > 0:
            return None
        if not 0 <= time.time() - entry.measured_at <= self.max_age_s:
            return None
        return entry

    def put(self, backend: DeviceSR, ms_per_px: float) -> None:
        """A fresh benchmark: replaces what was stored."""
        self._store(self.key(backend), SpeedEntry(ms_per_px, time.time(), "benchmark"))

    def observe(self, backend: DeviceSR, ms_per_px: float) -> None:
        """A real job's speed: folded into the stored figure, which it keeps fresh."""
        if not ms_per_px > 0:
            return
        old = self.get(backend)
        if old is not None:
            ms_per_px = (1 - JOB_WEIGHT) * old.sr_ms_per_lr_pixel + JOB_WEIGHT * ms_per_px
        jobs = old.jobs + 1 if old is not None else 1
        self._store(self.key(backend), SpeedEntry(ms_per_px, time.time(), "job", jobs))

    def _load(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _store(self, key: str, entry: SpeedEntry) -> None:
        data = self._load()
        data[key] = asdict(entry)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".device-profile-")
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1)
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only home loses the cache, not the job


def default_path() -> Path:
    override = os.environ.get("HYBRIDSR_PROFILE_CACHE")
    if override:
        return Path(override).expanduser()
    try:
        from hybridsr.imaging.realesrgan.cache import cache_dir  # the models' cache dir
    except ImportError:  # no onnx/onnxruntime on this device: Lanczos only
        return Path.home() / ".cache" / "hybridsr" / "device-profile.json"
    return cache_dir() / "device-profile.json"


def profile_cache() -> ProfileCache | None:
    """The default cache, or None when `$HYBRIDSR_PROFILE_CACHE` is `off`."""
    if os.environ.get("HYBRIDSR_PROFILE_CACHE", "").lower() == "off":
        return None
    return ProfileCache()
