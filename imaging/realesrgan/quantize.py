"""An int8 copy of a converted Real-ESRGAN model, for ``precision="fast"``.

Why: on CPUs with int8 dot products (x86 VNNI, ARM dot-product) an int8 convolution does
about twice the work per cycle of bf16 and four times that of float32, and onnxruntime —
the default install — has no faster float precision at all. The copy is built once per
model from its float ONNX with ``onnxruntime.quantization`` (QDQ format, which both
onnxruntime and OpenVINO run as int8) and cached beside it, keyed by the float model's
(content-keyed) name and the runtime's recipe version (:data:`RECIPES`): onnxruntime keeps
version 2, OpenVINO gets version 3.

Version 2 (onnxruntime): the same Convs int8 and biases corrected, calibrated on the
photo-like images only with onnxruntime's symmetric 99.997th-percentile ranges, each
quantized Conv's output rounded to uint8 too (onnxruntime runs a Conv as int8 only so).
Worst of 17 scikit-image photos: page 36.2 dB, grass 38.9, the rest 40.8-44.

What is quantized, and how (version 3, OpenVINO): every ``Conv`` but the first, the last
and body Convs 2 and 4 (:data:`FLOAT_CONVS`); weights int8 per output channel, each Conv's input
uint8 per tensor; the Convs' outputs, the PReLUs, the residual add and the pixel shuffle stay
float. Measured against exact (benchmarks/int8_quality.py) on 17 scikit-image photos,
centre crops up to 512², worst on OpenVINO: 40.98 dB (``page``, a scanned text page),
``grass`` 41.1, the rest 41.6-45.0. Version 2 on the same set: page 36.2, grass 38.9,
immunohistochemistry 40.8. What each part adds, on that set:

- no quantization of the Convs' outputs (onnxruntime's QDQ default rounds them once more
  before the PReLU): +0.75-2.3 dB on every photo, no slower;
- SmoothQuant (:func:`_smooth`): part of each channel's range moved into the next Conv's
  weights through the PReLU, exactly: +1-3 dB on photos, but text still clips (page 34.6);
- calibration on hard-edged images too (:func:`hard_images`: strokes like text, checkers)
  beside the photo-like ones, with asymmetric ranges at :data:`RANGE_PERCENTILES` of the
  float activations (:func:`_set_activation_ranges`; onnxruntime's percentile calibration
  is symmetric about zero and wastes codes on PReLU outputs): page 41.0, grass 41.1, the
  other photos 41.6 and up. Eight hard images instead of four: page and grass 40.4, text
  +1 dB; min/max ranges: photos down to 39.3; MSE-optimal ranges or SmoothQuant's alpha
  0.75: photos +0-1 dB, rendered text -1 to -1.7 dB;
- bias correction (:func:`_correct_biases`): +0.2-0.4 dB, free; the first Conv, the last and
  body Convs 2 and 4 in float: only the first and the last in float costs photos 0.4-1.2 dB.

Not everything reaches 40 dB: black text rendered on white is at 36 dB, saturated colour
blocks 38.7, 4 px complementary-colour checkers 19 (bf16: 54, 53, 48). Each one Conv in int8
alone already costs rendered text 6-14 dB (per-layer sensitivity): sharp synthetic edges
push the activations several times beyond any photo's, and one uint8 range per tensor
cannot hold both. Calibrating on saturated colour blocks too lifted those to 40.9 but
photos to 40.2 (page) and text stayed at 35. That is why ``fast`` still prefers bf16/f16
where the CPU has it and uses int8 only where it has none (see .runtime.candidates).
Weights-only int8 (W8A16) is no faster than bf16 on OpenVINO's CPU plugin (measured), so it
is not offered. Calibration inputs are synthetic and deterministic: the device needs no
image files to build the model.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path

import numpy as np

from .cache import write_atomic

__all__ = ["FLOAT_CONVS", "RANGE_PERCENTILES", "RECIPES", "cached_int8",
           "calibration_images", "hard_images", "int8_path"]

log = logging.getLogger(__name__)
_BUILDING = threading.Lock()  # one build at a time: it swaps sys.stdout while it runs

#: The recipe version each runtime's int8 copy is built with (part of its cache name: bump
#: one when its recipe changes). onnxruntime keeps version 2: it runs a Conv as int8 only
#: with its output quantized too, and version 3 with quantized outputs was 0.5-2 dB worse
#: than version 2 on photos (page 38.8, 2.6 better; grass 38.9, the same).
RECIPES = {"onnxruntime": "2", "openvino": "3"}
CALIBRATION_COUNT, CALIBRATION_SIDE, HARD_COUNT = 8, 96, 4
#: Version 2's activation range: this percentile of |activation|, symmetric.
V2_PERCENTILE = 99.997
#: The activation range: these percentiles of each activation over the calibration images.
RANGE_PERCENTILES = (0.001, 99.999)
#: Convs kept in float (besides the last), by position: the first reads the image (5% of a
#: body layer's work); body layers 2 and 4 were the two whose float copy gained the most.
FLOAT_CONVS = (0, 2, 4)


def int8_path(float_path: Path, runtime: str = "onnxruntime") -> Path:
    """Where ``runtime``'s int8 copy of ``float_path`` lives (it may not exist yet).

    Keyed by the float model's name and size, not its bytes: the cache names converted
    models by the sha256 of their sources (see .cache), and hashing 2.5 MB again would cost
    every start 10 ms.
    """
    float_path = Path(float_path)
    h = hashlib.sha256(f"hybridsr-int8-v{RECIPES[runtime]}\0{float_path.name}\0"
                       f"{float_path.stat().st_size}".encode())
    return float_path.with_name(f"{float_path.stem}-int8-{h.hexdigest()[:20]}.onnx")


def cached_int8(float_path: Path, runtime: str = "onnxruntime") -> Path:
    """``runtime``'s int8 copy of ``float_path``, built on a miss (seconds, imports onnx)."""
    target = int8_path(float_path, runtime)
    with _BUILDING:
        if not target.is_file():
            started = time.perf_counter()
            build = _quantize if RECIPES[runtime] == "3" else _quantize_v2
            write_atomic(target, build(Path(float_path)))
            log.info("built int8 model %s in %.1fs", target.name,
                     time.perf_counter() - started)
    return target


class _QuantizerChatter(logging.Filter):
    """Drops the records onnxruntime's quantizer logs through the root logger; only those."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "/onnxruntime/quantization/" not in record.pathname.replace("\\", "/")


def calibration_images(count: int = CALIBRATION_COUNT, side: int = CALIBRATION_SIDE,
                       seed: int = 0) -> list[np.ndarray]:
    """Synthetic photo-like RGB images: what the activation ranges are calibrated on.

    Natural images have a power spectrum near 1/f²: each image is such noise, channels
    mixed so colours correlate, with a few flat discs in front for hard edges and a little
    sensor-like noise on top.
    """
    rng = np.random.default_rng(seed)
    fy, fx = np.meshgrid(np.fft.fftfreq(side), np.fft.fftfreq(side), indexing="ij")
    freq = np.hypot(fy, fx)
    freq[0, 0] = 1.0
    yy, xx = np.mgrid[0:side, 0:side]
    out = []
    for _ in range(count):
        falloff = freq ** -(rng.uniform(1.6, 2.4) / 2)
        fields = [np.fft.ifft2(np.fft.fft2(rng.normal(size=(side, side))) * falloff).real
                  for _ in range(4)]
        img = np.stack([fields[0] + 0.5 * f for f in fields[1:]], -1)
        img = img @ (np.eye(3) + 0.3 * rng.normal(size=(3, 3)))
        img = (img - img.min((0, 1))) / np.ptp(img, (0, 1))
        img = img * rng.uniform(0.4, 1.0, 3) * 255 + rng.uniform(0, 80, 3)
        for _ in range(int(rng.integers(2, 6))):
            cx, cy = rng.uniform(0, side, 2)
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < rng.uniform(3, side / 4) ** 2] = \
                rng.uniform(0, 255, 3)
        img += rng.normal(0, rng.uniform(0, 6), img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def hard_images(count: int = HARD_COUNT, side: int = CALIBRATION_SIDE,
                seed: int = 1) -> list[np.ndarray]:
    """Synthetic hard-edged RGB images: glyph-like strokes on flat paper, and checkers.

    Why: scanned text, screenshots and fine regular patterns drive the activations several
    times beyond any photo's; calibrating without them clips those (scikit-image's
    ``page`` fell to 35.6 dB in version 2).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    out = []
    for i in range(count):
        if i % 2 == 0:  # dark strokes on light paper (sometimes inverted)
            paper, ink = rng.uniform(200, 255, 3), rng.uniform(0, 60, 3)
            if rng.random() < 0.3:
                paper, ink = ink, paper
            img = np.empty((side, side, 3))
            img[:] = paper
            for _ in range(int(rng.integers(40, 80))):
                y, x = rng.integers(0, side, 2)
                h, w = int(rng.integers(1, 4)), int(rng.integers(3, 12))
                if rng.random() < 0.5:
                    h, w = w, h
                img[y : y + h, x : x + w] = ink
        else:  # checkers and stripes, random periods and colours
            p = int(rng.integers(2, 7))
            a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
            mask = ((yy // p + xx // int(rng.integers(2, 9))) % 2).astype(bool)
            img = np.where(mask[..., None], a, b)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def _quantize_v2(float_path: Path) -> bytes:
    """Version 2 (onnxruntime's): photo-like calibration only, onnxruntime's symmetric
    percentile ranges, the Convs' outputs quantized too, biases corrected."""
    import tempfile

    import onnx

    inputs = [np.ascontiguousarray(im.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
              for im in calibration_images()]
    model = onnx.load(str(float_path))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    last = len(convs) - 1
    exclude = [c.name for i, c in enumerate(convs) if i in FLOAT_CONVS or i == last]
    with tempfile.TemporaryDirectory(prefix="hybridsr-int8-") as tmp:
        source, out = Path(tmp) / "source.onnx", Path(tmp) / "int8.onnx"
        _quantize_static(Path(float_path), out, inputs, exclude, True, V2_PERCENTILE)
        _correct_biases(model, onnx.load(str(out)),
                        [s.mean for s in _conv_input_stats(model, inputs)])
        onnx.save(model, str(source))
        _quantize_static(source, out, inputs, exclude, True, V2_PERCENTILE)
        return out.read_bytes()


def _quantize(float_path: Path) -> bytes:
    """Version 3 (OpenVINO's, see the module docstring); the int8 model's bytes."""
    import tempfile

    import onnx

    images = calibration_images() + hard_images()
    inputs = [np.ascontiguousarray(im.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
              for im in images]
    model = onnx.load(str(float_path))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    last = len(convs) - 1
    quantized = [i for i in range(len(convs)) if i not in FLOAT_CONVS and i != last]
    exclude = [c.name for i, c in enumerate(convs) if i not in quantized]
    _smooth(model, _conv_input_stats(model, inputs), quantized)
    with tempfile.TemporaryDirectory(prefix="hybridsr-int8-") as tmp:
        source, out = Path(tmp) / "source.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(source))
        _quantize_static(source, out, inputs, exclude, False)
        _correct_biases(model, onnx.load(str(out)),
                        [s.mean for s in _conv_input_stats(model, inputs)])
        onnx.save(model, str(source))
        _quantize_static(source, out, inputs, exclude, False)
        int8 = onnx.load(str(out))
    names = [n.input[0] for n in convs]
    stats = _tensor_stats(model, inputs, names)
    _set_activation_ranges(int8, dict(zip(names, stats, strict=True)))
    return int8.SerializeToString()


def _quantize_static(source: Path, target: Path, inputs: list[np.ndarray],
                     exclude: list[str], conv_outputs: bool,
                     percentile: float | None = None) -> None:
    """onnxruntime's static QDQ quantizer with our settings, quietly; its activation
    ranges are replaced afterwards (:func:`_set_activation_ranges`)."""
    import contextlib
    import io

    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {"input": x}

    chatter = _QuantizerChatter()
    logging.getLogger().addFilter(chatter)  # the quantizer logs INFO through the root logger
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # and prints its progress
            quantize_static(
                str(source), str(target), Reader(), quant_format=QuantFormat.QDQ,
                per_channel=True, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
                nodes_to_exclude=exclude, calibrate_method=CalibrationMethod.MinMax
                if percentile is None else CalibrationMethod.Percentile,
                # one rounding per layer: the Conv's output stays float into the PReLU
                extra_options=({} if conv_outputs else
                               {"OpTypesToExcludeOutputQuantization": ["Conv"]})
                | ({} if percentile is None else {"CalibPercentile": percentile}),
            )
    finally:
        logging.getLogger().removeFilter(chatter)


class _Stats:
    """One Conv input over the calibration images: per channel its mean and largest
    magnitude; over all values the few lowest and highest (for the range percentiles)."""

    def __init__(self, pixels: int) -> None:
        self.pixels, self.count, self.tail = pixels, 0, 0  # pixels: over all images
        self.sum: np.ndarray | float = 0.0
        self.peak: np.ndarray | float = 0.0
        self.low = np.zeros(0, np.float32)
        self.high = np.zeros(0, np.float32)

    def add(self, v: np.ndarray) -> None:
        flat = v.reshape(v.shape[0], -1)
        if not self.tail:  # enough of each tail for the percentile over every value
            lo_pct, hi_pct = RANGE_PERCENTILES
            self.tail = int(self.pixels * v.shape[0] * max(lo_pct, 100 - hi_pct) / 100) + 2
        self.count += flat.size
        self.sum = self.sum + flat.sum(1, dtype=np.float64)
        self.peak = np.maximum(self.peak, np.abs(flat).max(1))
        k = min(self.tail, flat.size)
        self.low = np.sort(np.concatenate([self.low, np.partition(flat.ravel(), k - 1)[:k]]))
        self.high = np.sort(np.concatenate([self.high, -np.partition(-flat.ravel(), k - 1)[:k]]))
        self.low, self.high = self.low[: self.tail], self.high[-self.tail :]

    @property
    def mean(self) -> np.ndarray:
        sums = np.asarray(self.sum)
        return sums * sums.size / max(self.count, 1)

    def range(self) -> tuple[float, float]:
        """The ``RANGE_PERCENTILES`` of all values seen: order statistics from the tails."""
        lo_pct, hi_pct = RANGE_PERCENTILES
        i = min(int(self.count * lo_pct / 100), self.low.size - 1)
        j = min(int(self.count * (100 - hi_pct) / 100), self.high.size - 1)
        return float(self.low[i]), float(self.high[-1 - j])


def _conv_input_stats(model, inputs: list[np.ndarray]) -> list[_Stats]:
    """Each Conv's input statistics over ``inputs`` (float model, onnxruntime)."""
    return _tensor_stats(model, inputs, [n.input[0] for n in model.graph.node
                                         if n.op_type == "Conv"])


def _tensor_stats(model, inputs: list[np.ndarray], names: list[str]) -> list[_Stats]:
    """Statistics of the tensors ``names`` over ``inputs`` (float model, onnxruntime)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    graph_inputs = {i.name for i in probe.graph.input}
    graph_outputs = {o.name for o in probe.graph.output}
    for name in names:
        if name not in graph_inputs | graph_outputs:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(probe.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    stats = [_Stats(sum(x[0, 0].size for x in inputs)) for _ in names]
    for x in inputs:
        feeds = {session.get_inputs()[0].name: x}
        values = dict(zip([o.name for o in session.get_outputs()],
                          session.run(None, feeds), strict=True))
        values.update(feeds)
        for stat, name in zip(stats, names, strict=True):
            stat.add(values[name][0])
    return stats


def _smooth(model, stats: list[_Stats], quantized: list[int]) -> None:
    """Move part of each quantized Conv's input range into its weights, in place.

    Channels of one activation differ several-fold in range while int8 has one scale per
    tensor. PReLU is positively homogeneous per channel (PReLU(x/s) = PReLU(x)/s for
    s > 0, the slope unchanged), so dividing the previous Conv's output channel c (weights
    and bias) by s_c and multiplying this Conv's input channel c by s_c computes the same
    function. With s_c = sqrt(range_c / weight_range_c) (SmoothQuant, Xiao et al. 2023,
    alpha 1/2) both ranges even out; the previous Conv's weights are quantized per output
    channel, so dividing them costs nothing.
    """
    from onnx import numpy_helper

    weights = {t.name: t for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    producer = {o: n for n in model.graph.node for o in n.output}

    def get(name: str) -> np.ndarray:
        return numpy_helper.to_array(weights[name])

    def put(name: str, value: np.ndarray) -> None:
        weights[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))

    for k in quantized:
        if k == 0 or not _prelu_between(producer, convs[k - 1], convs[k]):
            continue
        w = get(convs[k].input[1])
        act = np.maximum(np.asarray(stats[k].peak), 1e-5)
        s = np.sqrt(act / np.maximum(np.abs(w).max((0, 2, 3)), 1e-5))
        s /= np.exp(np.log(s).mean())  # only the balance between channels moves
        prev = convs[k - 1]
        put(prev.input[1], get(prev.input[1]) / s[:, None, None, None])
        put(prev.input[2], get(prev.input[2]) / s)
        put(convs[k].input[1], w * s[None, :, None, None])


def _prelu_between(producer: dict, prev, conv) -> bool:
    """Whether ``conv``'s input is ``prev``'s output through exactly the exporter's PReLU
    (Relu, two Mul, Add) or a native ``PRelu``: the only path scaling may cross."""
    node = producer.get(conv.input[0])
    if node is None or len(prev.input) < 3:
        return False
    if node.op_type == "PRelu":
        return node.input[0] == prev.output[0]
    if node.op_type != "Add":
        return False
    muls = [producer.get(i) for i in node.input]
    if any(m is None or m.op_type != "Mul" for m in muls):
        return False
    sources = {m.input[0] for m in muls}
    relu = next((producer[i] for i in sources if i in producer and
                 producer[i].op_type == "Relu"), None)
    return relu is not None and sources == {relu.output[0], prev.output[0]} \
        and relu.input[0] == prev.output[0]


def _set_activation_ranges(int8, stats: dict[str, _Stats]) -> None:
    """Each activation's uint8 scale and zero point from its own asymmetric range, in place.

    onnxruntime's percentile calibration is symmetric about zero, which wastes half the
    codes on PReLU outputs (mostly positive); ours covers [low, high] of the float
    activations at :data:`RANGE_PERCENTILES`.
    """
    from onnx import numpy_helper

    consts = {t.name: t for t in int8.graph.initializer}
    for n in int8.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] not in stats:
            continue
        stat = stats[n.input[0]]
        lo, hi = stat.range()
        lo, hi = min(lo, 0.0), max(hi, 1e-6)
        scale = np.float32((hi - lo) / 255.0)
        zero = np.uint8(np.clip(np.rint(-lo / scale), 0, 255))
        consts[n.input[1]].CopyFrom(numpy_helper.from_array(np.array(scale), n.input[1]))
        consts[n.input[2]].CopyFrom(numpy_helper.from_array(np.array(zero), n.input[2]))
    _requantize_biases(int8)


def _requantize_biases(int8) -> None:
    """Give each int32 bias the scale input scale x weight scale again, in place.

    The quantizer set it from its own input ranges; onnxruntime fuses a Conv into its int8
    kernel (QLinearConv) only when the bias scale is that product, else it runs it in float.
    """
    from onnx import numpy_helper

    consts = {t.name: t for t in int8.graph.initializer}
    producer = {o: n for n in int8.graph.node for o in n.output}

    def value(name: str) -> np.ndarray:
        return numpy_helper.to_array(consts[name])

    for conv in (n for n in int8.graph.node if n.op_type == "Conv" and len(n.input) > 2):
        x, w, b = (producer.get(i) for i in conv.input[:3])
        if not all(d is not None and d.op_type == "DequantizeLinear" for d in (x, w, b)):
            continue
        if value(b.input[0]).dtype != np.int32:
            continue
        bias = value(b.input[0]).astype(np.float64) * value(b.input[1])
        scale = (value(x.input[1]) * value(w.input[1])).astype(np.float32)
        q = np.clip(np.rint(bias / scale), -(2**31), 2**31 - 1).astype(np.int32)
        consts[b.input[0]].CopyFrom(numpy_helper.from_array(q, b.input[0]))
        consts[b.input[1]].CopyFrom(numpy_helper.from_array(scale, b.input[1]))


def _correct_biases(model, quantized, means: list[np.ndarray]) -> None:
    """Fold the int8 weights' mean output error into ``model``'s Conv biases, in place.

    Rounding the weights shifts each output channel's mean by (W_int8 - W) · E[input],
    with E[input] over the calibration images; subtracting it from the bias (Nagel et al.,
    "Data-Free Quantization", 2019) gained 0.2-0.4 dB on the photos at no run-time cost.
    """
    from onnx import numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    dequantized = {}
    for n in quantized.graph.node:
        if n.op_type == "DequantizeLinear" and consts.get(n.input[0], np.zeros(0)).ndim == 4:
            q = consts[n.input[0]].astype(np.float32)
            zero = consts[n.input[2]].astype(np.float32) if len(n.input) > 2 else 0.0
            scale = consts[n.input[1]].astype(np.float32)
            dequantized[n.output[0]] = (q - np.reshape(zero, (-1, 1, 1, 1))) * \
                np.reshape(scale, (-1, 1, 1, 1))
    weights = {t.name: t for t in model.graph.initializer}
    qconvs = [n for n in quantized.graph.node if n.op_type == "Conv"]
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv, qconv, mean in zip(convs, qconvs, means, strict=True):
        if qconv.input[1] not in dequantized or len(conv.input) < 3:
            continue
        w = numpy_helper.to_array(weights[conv.input[1]])
        error = (dequantized[qconv.input[1]] - w).sum((2, 3))
        bias = numpy_helper.to_array(weights[conv.input[2]]) - error @ mean
        weights[conv.input[2]].CopyFrom(
            numpy_helper.from_array(bias.astype(np.float32), conv.input[2]))
