"""Reader for ncnn ``.param`` / ``.bin`` model files, limited to what Real-ESRGAN uses.

Why a reader of our own: the only freely redistributable Real-ESRGAN weights on the
package index ship in ncnn format, and the device side must run them through
onnxruntime without torch or ncnn. The reader is strict on purpose: an unknown layer,
an unknown weight encoding, a short file or leftover bytes raise ``ModelFormatError``
instead of producing a network that silently computes something else.

Format facts relied on (ncnn ``src/net.cpp``, ``src/paramdict.cpp``, ``src/modelbin.cpp``):

* ``.param`` is text: magic ``7767517``, then ``layer_count blob_count``, then one line
  per layer: ``type name n_in n_out in_blobs... out_blobs... key=value...``. A key
  ``-233xx`` holds an array for parameter ``xx``, written ``count,v1,v2,...``. A value
  with ``.``, ``e`` or ``E`` in it is a float, otherwise an int.
* ``.bin`` is the weights of the layers in ``.param`` order, no header. A blob loaded
  with "type 0" (convolution weights) starts with a 4-byte tag: ``0x01306B47`` means
  float16 data follows (padded to 4 bytes), ``0`` means float32. "Type 1" blobs
  (convolution bias, PReLU slopes) are raw float32 with no tag.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ModelFormatError", "NcnnLayer", "NcnnNet", "parse_ncnn", "parse_param"]

PARAM_MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32_SCALED = 0x0002C056

#: Layer types this reader understands; anything else is refused by name.
SUPPORTED_LAYERS = frozenset(
    {
        "Input",
        "Split",
        "Convolution",
        "PReLU",
        "ReLU",
        "BinaryOp",
        "Eltwise",
        "Concat",
        "Interp",
        "PixelShuffle",
    }
)

ParamValue = int | float | tuple[int | float, ...]


class ModelFormatError(ValueError):
    """The model files are not a well-formed ncnn network this package can convert."""


@dataclass
class NcnnLayer:
    """One ``.param`` line plus the weight arrays it consumed from ``.bin``."""

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, ParamValue]
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def p(self, key: int, default: ParamValue) -> ParamValue:
        """Parameter ``key`` with ncnn's default when the line omits it."""
        return self.params.get(key, default)


@dataclass
class NcnnNet:
    """A parsed network: layers in file order (which ncnn guarantees is topological)."""

    layers: list[NcnnLayer]

    @property
    def input_blob(self) -> str:
        inputs = [ly.outputs[0] for ly in self.layers if ly.type == "Input"]
        if len(inputs) != 1:
            raise ModelFormatError(f"expected exactly one Input layer, found {len(inputs)}")
        return inputs[0]

    @property
    def output_blob(self) -> str:
        """The one blob produced and never consumed."""
        consumed = {b for ly in self.layers for b in ly.inputs}
        produced = [b for ly in self.layers for b in ly.outputs if b not in consumed]
        if len(produced) != 1:
            raise ModelFormatError(f"expected exactly one output blob, found {produced}")
        return produced[0]

    def num_parameters(self) -> int:
        return sum(int(w.size) for ly in self.layers for w in ly.weights.values())


def _parse_number(text: str, where: str) -> int | float:
    try:
        if any(c in text for c in ".eE"):
            return float(text)
        return int(text)
    except ValueError:
        raise ModelFormatError(f"{where}: bad number {text!r}") from None


def parse_param(text: str) -> list[NcnnLayer]:
    """Parse ``.param`` text into layers (no weights yet)."""
    lines = [ln.strip() for ln in text.replace("\r", "\n").split("\n")]
    lines = [ln for ln in lines if ln]
    if not lines or lines[0] != str(PARAM_MAGIC):
        raise ModelFormatError(f"not an ncnn .param file (magic {lines[:1]!r}, want {PARAM_MAGIC})")
    if len(lines) < 2:
        raise ModelFormatError(".param file has no layer-count line")
    try:
        layer_count, _blob_count = (int(x) for x in lines[1].split())
    except ValueError:
        raise ModelFormatError(f"bad layer/blob count line {lines[1]!r}") from None
    body = lines[2:]
    if len(body) != layer_count:
        raise ModelFormatError(f".param declares {layer_count} layers but has {len(body)} lines")
    layers: list[NcnnLayer] = []
    for lineno, line in enumerate(body, start=3):
        tok = line.split()
        where = f".param line {lineno}"
        if len(tok) < 4:
            raise ModelFormatError(f"{where}: too few fields: {line!r}")
        ltype, name = tok[0], tok[1]
        if ltype not in SUPPORTED_LAYERS:
            raise ModelFormatError(
                f"{where}: unsupported ncnn layer type {ltype!r} ({name}); "
                f"supported: {sorted(SUPPORTED_LAYERS)}"
            )
        try:
            n_in, n_out = int(tok[2]), int(tok[3])
        except ValueError:
            raise ModelFormatError(f"{where}: bad input/output counts") from None
        if len(tok) < 4 + n_in + n_out:
            raise ModelFormatError(f"{where}: missing blob names")
        inputs = tuple(tok[4 : 4 + n_in])
        outputs = tuple(tok[4 + n_in : 4 + n_in + n_out])
        params: dict[int, ParamValue] = {}
        for kv in tok[4 + n_in + n_out :]:
            key_s, sep, val = kv.partition("=")
            if not sep:
                raise ModelFormatError(f"{where}: bad parameter {kv!r}")
            key = int(_parse_number(key_s, where))
            if key <= -23300:
                count_s, *items = val.split(",")
                count = int(_parse_number(count_s, where))
                if count != len(items):
                    raise ModelFormatError(f"{where}: array {kv!r} declares {count} items")
                params[-key - 23300] = tuple(_parse_number(v, where) for v in items)
            else:
                params[key] = _parse_number(val, where)
        layers.append(NcnnLayer(ltype, name, inputs, outputs, params))
    return layers


class _BinReader:
    """Sequential reader that mirrors ncnn's ``ModelBinFromDataReader::load``."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def _take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise ModelFormatError(
                f".bin truncated: {what} needs {n} bytes at offset {self.pos}, "
                f"file has {len(self.data)}"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def raw_f32(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self._take(4 * count, what), dtype="<f4").astype(np.float32)

    def tagged(self, count: int, what: str) -> np.ndarray:
        (tag,) = struct.unpack("<I", self._take(4, what + " tag"))
        if tag == TAG_FP16:
            nbytes = 2 * count
            buf = self._take((nbytes + 3) // 4 * 4, what)
            return np.frombuffer(buf[:nbytes], dtype="<f2").astype(np.float32)
        if tag == 0:
            return self.raw_f32(count, what)
        if tag == TAG_INT8:
            raise ModelFormatError(f"{what}: int8-quantised weights are not supported")
        raise ModelFormatError(f"{what}: unknown weight tag 0x{tag:08X} at offset {self.pos - 4}")


def _load_weights(layer: NcnnLayer, reader: _BinReader) -> None:
    what = f"{layer.type} {layer.name}"
    if layer.type == "Convolution":
        num_output = int(layer.p(0, 0))
        wsize = int(layer.p(6, 0))
        if int(layer.p(8, 0)):
            raise ModelFormatError(f"{what}: int8 convolution is not supported")
        if num_output <= 0 or wsize <= 0:
            raise ModelFormatError(f"{what}: num_output={num_output} weight_data_size={wsize}")
        layer.weights["weight"] = reader.tagged(wsize, what + " weight")
        if int(layer.p(5, 0)):
            layer.weights["bias"] = reader.raw_f32(num_output, what + " bias")
    elif layer.type == "PReLU":
        n = int(layer.p(0, 0))
        if n <= 0:
            raise ModelFormatError(f"{what}: num_slope={n}")
        layer.weights["slope"] = reader.raw_f32(n, what + " slope")
    for key, arr in layer.weights.items():
        if not np.isfinite(arr).all():
            raise ModelFormatError(f"{what}: non-finite values in {key} (corrupt .bin?)")


def parse_ncnn(param_text: str, bin_data: bytes) -> NcnnNet:
    """Parse a network and its weights; every byte of ``bin_data`` must be consumed."""
    layers = parse_param(param_text)
    reader = _BinReader(bin_data)
    for layer in layers:
        _load_weights(layer, reader)
    if reader.pos != len(bin_data):
        raise ModelFormatError(
            f".bin has {len(bin_data) - reader.pos} unread bytes after the last layer "
            f"(read {reader.pos} of {len(bin_data)}): .param and .bin do not belong together"
        )
    return NcnnNet(layers)
