"""Inference engines for the converted Real-ESRGAN ONNX model: onnxruntime or OpenVINO.

Why two: onnxruntime ships with the base install and runs everywhere; OpenVINO
(``pip install "hybridsr[openvino]"``) is faster on x86 and ARM CPUs and can compute in
bf16/f16 where the CPU has it. ``auto`` takes what is installed; with both, a short
micro-benchmark on this device decides once, and the choice is cached per device, model,
precision and runtime versions (``runtime-choice.json`` in the model cache directory).

Precision ``exact`` computes in float32: the output stays within 1/255 of the ncnn
reference. ``fast`` lets OpenVINO use bf16 (x86 with AVX512-BF16/AMX) or f16 (ARM) where
the CPU advertises it; onnxruntime has no faster CPU precision and stays float32.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from .cache import cache_dir, write_atomic

__all__ = [
    "PRECISIONS", "RUNTIMES", "Engine", "RuntimeUnavailable", "available_runtimes",
    "check_choice", "choose_runtime", "create_engine",
]

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "onnxruntime", "openvino")
PRECISIONS = ("exact", "fast")
_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
#: Side of the square input the choice is measured on: big enough to be compute-bound
#: for the compact model; RRDB models (files over 10 MB) are measured on a quarter of it.
BENCH_SIDE = 96
_HEAVY_MODEL_BYTES = 10 << 20


class RuntimeUnavailable(ImportError):
    """The runtime asked for is not installed here."""


class Engine(Protocol):
    name: str  # "onnxruntime" or "openvino"
    precision: str  # what it computes in: "f32", "bf16" or "f16"

    def run(self, x: np.ndarray) -> np.ndarray:
        """NCHW float32 in [0, 1] → NCHW float32 at the model's scale."""
        ...


def available_runtimes() -> list[str]:
    """The runtimes importable here, onnxruntime first (found without importing them)."""
    found = []
    for name, module in _MODULES.items():
        try:
            if importlib.util.find_spec(module) is not None:
                found.append(name)
        except (ImportError, ValueError):  # ValueError: sys.modules[module] is None
            pass
    return found


class OrtEngine:
    """onnxruntime on the given providers (CPU by default); always float32 on the CPU."""

    name = "onnxruntime"

    def __init__(self, onnx_path: Path, threads: int | None, providers: Sequence[str]) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(onnx_path), sess_options=opts,
                                            providers=list(providers))
        self.providers = self.session.get_providers()
        self.metadata = self.session.get_modelmeta().custom_metadata_map
        self._input = self.session.get_inputs()[0].name
        self.precision = "f32"

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: x})[0]


def _ov_precision(core, precision: str) -> str:
    """The fastest reduced precision the CPU advertises, for ``fast``; else f32."""
    if precision == "exact":
        return "f32"
    caps = set(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if "BF16" in caps:
        return "bf16"
    if "FP16" in caps and platform.machine().lower() in ("arm64", "aarch64"):
        return "f16"
    return "f32"


def _import_openvino():
    """Import OpenVINO's runtime without its model converter.

    ``openvino/__init__`` ends with an optional ``from openvino.tools.ovc import
    convert_model`` (inside ``except ImportError``) that pulls in the converter and its
    telemetry: about 40% of the import time, and we only run an existing ONNX file.
    Blocking that one module during the import skips it; unblocked afterwards, so a later
    ``import openvino.tools.ovc`` works as usual.
    """
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    block = "openvino.tools.ovc" not in sys.modules
    if block:
        sys.modules["openvino.tools.ovc"] = None  # type: ignore[assignment]
    try:
        import openvino
    finally:
        if block:
            sys.modules.pop("openvino.tools.ovc", None)
    return openvino


class OpenVinoEngine:
    """OpenVINO on the CPU, one compiled model with dynamic input size."""

    name = "openvino"

    def __init__(self, onnx_path: Path, threads: int | None, precision: str) -> None:
        try:
            ov = _import_openvino()
        except ImportError as exc:
            raise RuntimeUnavailable(
                f'OpenVINO is not installed ({exc}); pip install "hybridsr[openvino]"'
            ) from None
        core = ov.Core()
        try:  # compiled models are cached: a later start skips most of the compile
            core.set_property({"CACHE_DIR": str(cache_dir() / "openvino")})
        except Exception as exc:  # a read-only cache only costs compile time
            log.debug("OpenVINO model cache unavailable: %s", exc)
        self._path = Path(onnx_path)
        model = core.read_model(str(onnx_path))
        self.precision = _ov_precision(core, precision)
        config: dict[str, object] = {
            "INFERENCE_PRECISION_HINT": self.precision,
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self._compiled = core.compile_model(model, "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._lock = threading.Lock()  # an infer request is not thread-safe; sessions are

    @property
    def metadata(self) -> dict[str, str]:
        return _onnx_metadata(self._path)

    def run(self, x: np.ndarray) -> np.ndarray:
        with self._lock:  # concurrent jobs on one client share this engine
            self._request.infer({0: x})
            return self._request.get_output_tensor(0).data.copy()


def _onnx_metadata(onnx_path: Path) -> dict[str, str]:
    """The ONNX file's ``metadata_props`` (scale/overlap of converted checkpoints)."""
    import onnx  # only for OpenVINO on a custom model: built-in models carry none

    return {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False)
            .metadata_props}


def create_engine(
    onnx_path: Path,
    runtime: str = "auto",
    precision: str = "exact",
    threads: int | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> Engine:
    """An engine for ``onnx_path``; ``auto`` resolves through :func:`choose_runtime`."""
    check_choice(runtime, precision)
    if runtime == "auto":
        runtime = choose_runtime(onnx_path, precision, threads)
    if runtime not in available_runtimes():
        raise RuntimeUnavailable(
            f"runtime {runtime!r} is not installed here"
            + ('; pip install "hybridsr[openvino]"' if runtime == "openvino" else "")
        )
    if runtime == "openvino":
        return OpenVinoEngine(onnx_path, threads, precision)
    return OrtEngine(onnx_path, threads, providers)


def check_choice(runtime: str, precision: str) -> None:
    """ValueError naming the choices for an unknown runtime or precision."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def choice_key(onnx_path: Path, precision: str, threads: int | None,
               runtimes: Sequence[str]) -> str:
    """What the measured choice depends on: device, model file, precision, runtime versions."""
    parts = [_cpu_name(), platform.machine(), str(os.cpu_count()), str(threads), precision,
             Path(onnx_path).name, *(f"{r}={_version(r)}" for r in runtimes)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def _choice_file() -> Path:
    return cache_dir() / "runtime-choice.json"


def _read_choices() -> dict[str, dict]:
    try:
        data = json.loads(_choice_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def measure_runtime(onnx_path: Path, runtime: str, precision: str,
                    threads: int | None) -> float:
    """Best of 3 runs on a BENCH_SIDE² input, after a warm-up (build time excluded)."""
    engine = create_engine(onnx_path, runtime, precision, threads)
    side = BENCH_SIDE // 2 if Path(onnx_path).stat().st_size > _HEAVY_MODEL_BYTES else BENCH_SIDE
    x = np.random.default_rng(0).random((1, 3, side, side), dtype=np.float32)
    engine.run(x)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        engine.run(x)
        best = min(best, time.perf_counter() - t0)
    return best


def choose_runtime(
    onnx_path: Path,
    precision: str = "exact",
    threads: int | None = None,
    measure: Callable[[Path, str, str, int | None], float] = measure_runtime,
) -> str:
    """The runtime ``auto`` means here: the only one installed, else the measured fastest.

    The measurement (about a second) runs once per device/model/precision/versions; later
    processes read the answer from the cache file.
    """
    runtimes = available_runtimes()
    if not runtimes:
        raise RuntimeUnavailable(
            'no runtime installed: pip install onnxruntime or "hybridsr[openvino]"'
        )
    if len(runtimes) == 1:
        return runtimes[0]
    key = choice_key(onnx_path, precision, threads, runtimes)
    known = _read_choices().get(key)
    if isinstance(known, dict) and known.get("runtime") in runtimes:
        return str(known["runtime"])
    seconds = {r: measure(onnx_path, r, precision, threads) for r in runtimes}
    best = min(seconds, key=seconds.__getitem__)
    log.info("runtime for %s (%s): %s, measured %s", Path(onnx_path).name, precision, best,
             {r: round(s, 4) for r, s in seconds.items()})
    choices = _read_choices()
    choices[key] = {"runtime": best, "seconds": seconds, "precision": precision,
                    "model": Path(onnx_path).name, "cpu": _cpu_name()}
    try:
        write_atomic(_choice_file(), json.dumps(choices, indent=1).encode())
    except OSError as exc:  # a read-only cache only costs a re-measure next time
        log.warning("cannot cache the runtime choice: %s", exc)
    return best
