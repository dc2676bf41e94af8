"""Inference engines for the converted Real-ESRGAN ONNX model: onnxruntime or OpenVINO.

Why two: onnxruntime ships with the base install and runs everywhere; OpenVINO
(``pip install "hybridsr[openvino]"``) is faster on x86 and ARM CPUs and can compute in
bf16/f16 where the CPU has it.

Precision ``exact`` computes in float32: the output stays within 1/255 of the ncnn
reference. ``fast`` may use any computation that stays at least 40 dB PSNR from exact on
photos: float32, OpenVINO's bf16 (x86 with AVX512-BF16/AMX) or f16 (ARM) where the CPU
advertises it, and, for the built-in compact model on CPUs with int8 dot products (x86
VNNI, ARM), an int8 copy of the model (:mod:`.quantize`) on either runtime, but only where
no bf16/f16 is available (int8 is 12 dB further from exact than bf16 on photos, more on
synthetic text, see :func:`candidates`).

``auto`` (and an explicit runtime with more than one way to compute ``fast``) takes the
candidate (runtime, computation) measured fastest on this device. The measurement runs once
and is cached per device, model, precision, candidates and runtime versions
(``runtime-choice.json`` in the model cache directory).
"""

from __future__ import annotations

import hashlib
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

from hybridsr.imaging.cpu import cpu_flags, cpu_model

from .cache import cache_dir, write_atomic
from .guard import GuardedEngine

__all__ = [
    "PRECISIONS", "RUNTIMES", "Engine", "RuntimeUnavailable", "available_runtimes",
    "candidates", "check_choice", "choose", "choose_runtime", "create_engine",
    "int8_cpu", "reduced_float_cpu",
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
    precision: str  # what it computes in: "f32", "bf16", "f16" or "int8"

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
    """onnxruntime on the given providers (CPU by default): float32, or int8 on a QDQ model."""

    name = "onnxruntime"

    def __init__(self, onnx_path: Path, threads: int | None, providers: Sequence[str],
                 precision: str = "f32") -> None:
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
        self.precision = precision

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: x})[0]


def _ov_precision(core, precision: str) -> str:
    """The fastest reduced float precision the CPU advertises, for ``fast``; else f32."""
    if precision in ("exact", "f32"):
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
    """OpenVINO on the CPU, one compiled model with dynamic input size.

    ``precision``: ``exact``/``f32``, ``fast`` (the CPU's reduced float precision) or
    ``int8`` (``onnx_path`` is then a QDQ model; its float parts run in the reduced one).
    """

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
        hint = _ov_precision(core, "fast" if precision == "int8" else precision)
        self.precision = "int8" if precision == "int8" else hint
        config: dict[str, object] = {
            "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        # from the path, not a read_model(): with the cache, OV then skips parsing the ONNX
        self._compiled = core.compile_model(str(onnx_path), "CPU", config)
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


#: One way to run the model: (runtime, computation). Computation ``f32``, ``int8`` or
#: ``reduced`` (OpenVINO's bf16/f16 where the CPU has it, resolved when the engine is built).
Candidate = tuple[str, str]


def int8_cpu() -> bool:
    """Whether this CPU has int8 dot products: x86 VNNI (AVX512 or AVX) or any 64-bit ARM.

    Without them int8 is not faster, and onnxruntime's x86 u8s8 kernels can saturate.
    """
    if platform.machine().lower() in ("arm64", "aarch64"):
        return True
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def reduced_float_cpu() -> bool:
    """Whether OpenVINO can compute in bf16 (x86 AVX512-BF16/AMX) or f16 (ARM with FP16
    arithmetic) here: read from the CPU's flags, so ``auto`` need not import OpenVINO."""
    flags = cpu_flags()
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "asimdhp" in flags or platform.system() == "Darwin"
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def candidates(precision: str, runtimes: Sequence[str], int8: bool = False,
               providers: Sequence[str] = ("CPUExecutionProvider",)) -> list[Candidate]:
    """The ways to compute ``precision`` with ``runtimes``; ``int8``: an int8 copy may be used.

    ``exact`` is float32 only. ``fast`` adds OpenVINO's reduced float precision and, where
    ``int8`` and :func:`int8_cpu`, the int8 model (onnxruntime only on its CPU provider).
    bf16/f16 stay 48-59 dB from exact on every image measured; int8 on OpenVINO 41.0 dB on
    the worst of 17 scikit-image photos but 36 on text rendered on white and 19 on hard 4 px
    checkers, so an int8 engine hands such inputs to a float one (:class:`.guard.GuardedEngine`).
    """
    if precision == "exact":
        return [(r, "f32") for r in runtimes]
    int8 = int8 and int8_cpu()
    found: list[Candidate] = []
    for r in runtimes:
        if r == "onnxruntime":
            found.append((r, "f32"))
            if int8 and list(providers) == ["CPUExecutionProvider"]:
                found.append((r, "int8"))
        else:
            found.append((r, "reduced"))
            if int8:
                found.append((r, "int8"))
    return found


def create_engine(
    onnx_path: Path,
    runtime: str = "auto",
    precision: str = "exact",
    threads: int | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    int8: bool = False,
) -> Engine:
    """An engine for ``onnx_path``: the only candidate, else the measured fastest (:func:`choose`).

    ``int8``: the model tolerates int8 (the caller checked its quality, see :mod:`.quantize`).
    """
    check_choice(runtime, precision)
    if runtime == "auto":
        runtimes = available_runtimes()
        if not runtimes:
            raise RuntimeUnavailable(
                'no runtime installed: pip install onnxruntime or "hybridsr[openvino]"')
    elif runtime not in available_runtimes():
        raise RuntimeUnavailable(
            f"runtime {runtime!r} is not installed here"
            + ('; pip install "hybridsr[openvino]"' if runtime == "openvino" else "")
        )
    else:
        runtimes = [runtime]
    found = candidates(precision, runtimes, int8, providers)
    chosen = found[0] if len(found) == 1 else choose(onnx_path, precision, threads, found)
    return build_engine(onnx_path, chosen, threads, providers)


def build_engine(onnx_path: Path, candidate: Candidate, threads: int | None,
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> Engine:
    """The engine for one candidate; the int8 model (and OpenVINO's native-PReLU copy of a
    converted model, see .prelu) is built and cached on first use."""
    runtime, compute = candidate
    path = Path(onnx_path)
    if compute == "int8":
        from .quantize import cached_int8

        path = cached_int8(path, runtime)  # no copy, no int8: an OSError skips this one
        if runtime == "openvino":  # native PReLU: 9% less CPU there, 14% more on onnxruntime
            from .prelu import cached_native_prelu

            path = cached_native_prelu(path)
    elif (runtime == "openvino" and path.parent == cache_dir() / "realesrgan"
          and path.stat().st_size <= _HEAVY_MODEL_BYTES):
        # our own converted models, the compact ones: the RRDB models have no PReLU, and a
        # 67 MB copy of them would change nothing
        from .prelu import cached_native_prelu

        try:
            path = cached_native_prelu(path)
        except OSError as exc:  # a read-only cache: the same model, 12-15% slower
            log.warning("no native-PReLU copy of %s (%s); running the model as is",
                        path.name, exc)
    if runtime == "openvino":
        engine: Engine = OpenVinoEngine(path, threads,
                                        "fast" if compute == "reduced" else compute)
    else:
        engine = OrtEngine(path, threads, providers, compute)
    if compute != "int8":
        return engine
    fallback: Candidate = (runtime, "reduced" if runtime == "openvino" else "f32")
    return GuardedEngine(engine, lambda: build_engine(onnx_path, fallback, threads, providers))


def check_choice(runtime: str, precision: str) -> None:
    """ValueError naming the choices for an unknown runtime or precision."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")


def _version(dist: str) -> str:
    """``dist``'s version from its ``.dist-info`` folder beside the package.

    Read at every ``auto`` start (the choice key): importing ``importlib.metadata`` alone
    costs 10-20 ms of it, so it is only the fallback.
    """
    try:
        spec = importlib.util.find_spec(dist)
        if spec is not None and spec.submodule_search_locations:
            site = Path(next(iter(spec.submodule_search_locations))).parent
            found = sorted(site.glob(f"{dist.replace('-', '_')}-*.dist-info"))
            if len(found) == 1:
                return found[0].name[len(dist) + 1 : -len(".dist-info")]
    except (ImportError, ValueError, OSError):
        pass
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def choice_key(onnx_path: Path, precision: str, threads: int | None,
               found: Sequence[Candidate]) -> str:
    """What the measured choice depends on: device, model file, precision, candidates,
    runtime versions."""
    runtimes = sorted({r for r, _ in found})
    parts = ["v2", cpu_model(), platform.machine(), str(os.cpu_count()), str(threads),
             precision, Path(onnx_path).name, *("/".join(c) for c in found),
             *(f"{r}={_version(r)}" for r in runtimes)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def _choice_file() -> Path:
    return cache_dir() / "runtime-choice.json"


def _read_choices() -> dict[str, dict]:
    try:
        data = json.loads(_choice_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def measure_candidate(onnx_path: Path, candidate: Candidate, threads: int | None) -> float:
    """Best of 3 runs on a BENCH_SIDE² input, after a warm-up (build time excluded)."""
    engine = build_engine(onnx_path, candidate, threads)
    side = BENCH_SIDE // 2 if Path(onnx_path).stat().st_size > _HEAVY_MODEL_BYTES else BENCH_SIDE
    x = np.random.default_rng(0).random((1, 3, side, side), dtype=np.float32)
    engine.run(x)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        engine.run(x)
        best = min(best, time.perf_counter() - t0)
    return best


Measure = Callable[[Path, Candidate, "int | None"], float]


def choose(onnx_path: Path, precision: str, threads: int | None,
           found: Sequence[Candidate], measure: Measure = measure_candidate) -> Candidate:
    """The measured fastest of ``found``: measured once per device/model/precision/versions
    (a second or two, plus a few seconds to build an int8 model), then read from the cache.

    A candidate that cannot be built here (the int8 build needs ``onnx``) is left out.
    """
    key = choice_key(onnx_path, precision, threads, found)
    known = _read_choices().get(key)
    if isinstance(known, dict):
        cached = (known.get("runtime"), known.get("compute"))
        if cached in found:
            return cached  # type: ignore[return-value]
    seconds: dict[Candidate, float] = {}
    for candidate in found:
        try:
            seconds[candidate] = measure(onnx_path, candidate, threads)
        except (ImportError, OSError) as exc:  # onnx missing, a read-only cache: no int8 copy
            log.warning("cannot measure %s: %s", "/".join(candidate), exc)
    if not seconds:
        raise RuntimeUnavailable(f"none of {found} can run here")
    best = min(seconds, key=seconds.__getitem__)
    named = {"/".join(c): round(s, 4) for c, s in seconds.items()}
    log.info("runtime for %s (%s): %s, measured %s", Path(onnx_path).name, precision,
             "/".join(best), named)
    choices = _read_choices()
    choices[key] = {"runtime": best[0], "compute": best[1], "seconds": named,
                    "precision": precision, "model": Path(onnx_path).name,
                    "cpu": cpu_model() or platform.machine()}
    try:
        write_atomic(_choice_file(), json.dumps(choices, indent=1).encode())
    except OSError as exc:  # a read-only cache only costs a re-measure next time
        log.warning("cannot cache the runtime choice: %s", exc)
    return best


def choose_runtime(onnx_path: Path, precision: str = "exact", threads: int | None = None,
                   int8: bool = False, measure: Measure = measure_candidate) -> str:
    """The runtime ``auto`` means here for ``precision`` (see :func:`choose`)."""
    runtimes = available_runtimes()
    if not runtimes:
        raise RuntimeUnavailable(
            'no runtime installed: pip install onnxruntime or "hybridsr[openvino]"')
    found = candidates(precision, runtimes, int8)
    if len(found) == 1:
        return found[0][0]
    return choose(onnx_path, precision, threads, found, measure)[0]
