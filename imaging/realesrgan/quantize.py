"""An int8 copy of a converted Real-ESRGAN model, for ``precision="fast"``.

Why: on CPUs with int8 dot products (x86 VNNI, ARM dot-product) an int8 convolution does
about twice the work per cycle of bf16 and four times that of float32, and onnxruntime —
the default install — has no faster float precision at all. The copy is built once per
model from its float ONNX with ``onnxruntime.quantization`` (QDQ format, which both
onnxruntime and OpenVINO run as int8) and cached beside it, keyed by the float model's
(content-keyed) name and :data:`QUANTIZER_VERSION`.

What is quantized, and how far from float32 it lands: every ``Conv`` but the first, the
last and body Convs 2 and 4 (:data:`FLOAT_CONVS`); weights int8 per output channel,
activations uint8 per tensor; the activations, the residual add and the pixel shuffle stay
float. Measured against exact on ten scikit-image photos (astronaut, coffee, chelsea,
rocket, immunohistochemistry, hubble_deep_field, retina, colorwheel, cat, logo), centre
crops of 128², 256² and up to 512², worst case on OpenVINO / onnxruntime: 40.66 / 40.72 dB
(coffee and immunohistochemistry at 256²). Version 1 (every body Conv int8, 99.99th
percentile, no bias correction) reached 39.39 dB there. What each part adds:

- the first Conv reads the image and costs 5% of a body layer; the last writes the residual
  that is the output's detail: both in float add 0.3-1.3 dB at no measurable cost;
- the activation range is a compromise between photos: at the 99.99th percentile coffee
  and astronaut clip (39.4 dB), at the 99.999th immunohistochemistry loses resolution
  (38.8); 99.997 balances them. Min/max ranges: 36.6;
- bias correction: rounding the weights shifts each channel's mean output, corrected from
  the calibration images' mean activations (:func:`_correct_biases`): +0.2-0.4 dB, free;
- body Convs 2 and 4 in float: +0.3 dB for about 6% (OpenVINO) to 11% (onnxruntime) more
  CPU than all-int8; each single body Conv in float adds only 0.0-0.25 dB (the error is
  spread over all of them), so keeping more buys little per CPU.

Not everything stays above 40 dB: on scikit-image's ``page`` (a scanned text page) int8 is
at 35.6 dB and on ``grass`` at 39.0 (even half the body in float: 35.9 and 40.2): hard
black-on-white edges drive activations far beyond any range that keeps photos sharp. bf16
stays 52-57 dB from exact on all of them, which is why ``fast`` uses int8 only where no
bf16/f16 is available (see .runtime.candidates). Symmetric int8 activations and entropy
calibration were worse when version 1 was chosen; equalising the channels' activation ranges
(scaled through the PReLU into the next Conv's weights) was worse here (38.8 dB), as the
weights then round worse. Calibration inputs are synthetic (1/f²
noise with hard-edged discs, see :func:`calibration_images`): they reach the same quality as
real photos, and the device needs no image files to build the model.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path

import numpy as np

from .cache import write_atomic

__all__ = ["FLOAT_CONVS", "QUANTIZER_VERSION", "calibration_images", "cached_int8", "int8_path"]

log = logging.getLogger(__name__)
_BUILDING = threading.Lock()  # one build at a time: it swaps sys.stdout while it runs

#: Bump when the quantization recipe changes, so old int8 copies are not reused.
QUANTIZER_VERSION = "2"
CALIBRATION_COUNT, CALIBRATION_SIDE, PERCENTILE = 8, 96, 99.997
#: Convs kept in float (besides the last), by position: the first reads the image (5% of a
#: body layer's work); body layers 2 and 4 were the two whose float copy gained the most.
FLOAT_CONVS = (0, 2, 4)


def int8_path(float_path: Path) -> Path:
    """Where the int8 copy of ``float_path`` lives (it may not exist yet).

    Keyed by the float model's name and size, not its bytes: the cache names converted
    models by the sha256 of their sources (see .cache), and hashing 2.5 MB again would cost
    every start 10 ms.
    """
    float_path = Path(float_path)
    h = hashlib.sha256(f"hybridsr-int8-v{QUANTIZER_VERSION}\0{float_path.name}\0"
                       f"{float_path.stat().st_size}".encode())
    return float_path.with_name(f"{float_path.stem}-int8-{h.hexdigest()[:20]}.onnx")


def cached_int8(float_path: Path) -> Path:
    """The int8 copy of ``float_path``, built on a miss (a few seconds, imports onnx)."""
    target = int8_path(float_path)
    with _BUILDING:
        if not target.is_file():
            started = time.perf_counter()
            write_atomic(target, _quantize(Path(float_path)))
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


def _quantize(float_path: Path) -> bytes:
    """QDQ int8 of the Convs but :data:`FLOAT_CONVS`, calibrated on
    :func:`calibration_images`, biases corrected for the int8 weights; the model's bytes."""
    import tempfile

    import onnx

    inputs = [np.ascontiguousarray(im.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
              for im in calibration_images()]
    model = onnx.load(str(float_path))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    last = len(convs) - 1
    exclude = [c.name for i, c in enumerate(convs) if i in FLOAT_CONVS or i == last]
    with tempfile.TemporaryDirectory(prefix="hybridsr-int8-") as tmp:
        first = Path(tmp) / "first.onnx"
        _quantize_static(Path(float_path), first, inputs, exclude)
        corrected = Path(tmp) / "corrected.onnx"
        _correct_biases(model, onnx.load(str(first)), _conv_input_means(model, inputs))
        onnx.save(model, str(corrected))
        out = Path(tmp) / "int8.onnx"
        _quantize_static(corrected, out, inputs, exclude)
        return out.read_bytes()


def _quantize_static(source: Path, target: Path, inputs: list[np.ndarray],
                     exclude: list[str]) -> None:
    """onnxruntime's static QDQ quantizer with our settings, quietly."""
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
                nodes_to_exclude=exclude, calibrate_method=CalibrationMethod.Percentile,
                extra_options={"CalibPercentile": PERCENTILE},
            )
    finally:
        logging.getLogger().removeFilter(chatter)


def _conv_input_means(model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Each Conv's mean input per channel over ``inputs`` (float model, onnxruntime)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = [n.input[0] for n in probe.graph.node if n.op_type == "Conv"]
    graph_inputs = {i.name for i in probe.graph.input}
    for name in names:
        if name not in graph_inputs:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(probe.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    total: list = [0.0] * len(names)
    for x in inputs:
        feeds = {session.get_inputs()[0].name: x}
        values = dict(zip([o.name for o in session.get_outputs()],
                          session.run(None, feeds), strict=True))
        values.update(feeds)
        for i, name in enumerate(names):
            v = values[name][0]
            total[i] = total[i] + v.reshape(v.shape[0], -1).mean(1, dtype=np.float64)
    return [t / len(inputs) for t in total]


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
