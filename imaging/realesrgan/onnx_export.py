"""Build an ONNX graph from a parsed ncnn network, with the ``onnx`` package only (no torch).

The graph takes ``input``: float32 NCHW in [0, 1] with dynamic height and width, and gives
``output`` of the same layout at ``scale`` times the size. Pre/post-processing (uint8,
padding, tiling) stays in :mod:`.upscaler` so the graph is exactly the ncnn network.

Layer mapping, with the ncnn semantics each one matches:

* ``Convolution``: ``Conv`` (weights are OIHW in both formats) plus the fused activation
  (``9=1`` ReLU, ``9=2`` LeakyReLU with slope ``10[0]``).
* ``Eltwise`` sum with coefficients ``c``: ``c0*a + c1*b + ...`` (``Mul`` skipped for 1.0).
* ``PixelShuffle`` mode 0 is PyTorch's ``pixel_shuffle``: ``DepthToSpace`` mode ``CRD``.
* ``Interp`` nearest: ncnn uses ``src = floor(dst * in/out)``, i.e. ``Resize`` with
  ``asymmetric`` coordinates and ``floor`` rounding.
* ``Interp`` bicubic (the trailing x2/x3 downscale of realesr-animevideov3): ncnn's
  ``cubic_coeffs`` uses Keys' kernel with ``A = -0.75``, half-pixel centres
  (``src = (dst + 0.5) * in/out - 0.5``), no antialiasing when shrinking, and at the borders
  folds the weights of out-of-range taps onto the edge pixel, which is the same as
  clamping tap indices. That is ONNX ``Resize`` ``cubic`` with ``cubic_coeff_a=-0.75``,
  ``half_pixel``, ``exclude_outside=0``.
* ``PReLU``: ``s*x + (1-s)*relu(x)`` (see :func:`_prelu` for why not ONNX ``PRelu``).
* ``Interp`` bilinear: ``Resize`` linear, ``half_pixel`` (or ``align_corners``).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .ncnn import ModelFormatError, NcnnLayer, NcnnNet

__all__ = ["OPSET", "to_onnx"]

#: Opset 17 runs on every onnxruntime of the last few years and on CoreML/CUDA providers.
OPSET = 17
IR_VERSION = 8


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.alias: dict[str, str] = {}
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def blob(self, ncnn_name: str) -> str:
        return self.alias.get(ncnn_name, ncnn_name)

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=self.name(op), **attrs))
        return output


def _conv(b: _Builder, ly: NcnnLayer, out: str) -> None:
    num_output = int(ly.p(0, 0))
    kw = int(ly.p(1, 0))
    kh = int(ly.p(11, kw))
    dw = int(ly.p(2, 1))
    dh = int(ly.p(12, dw))
    sw = int(ly.p(3, 1))
    sh = int(ly.p(13, sw))
    pl = int(ly.p(4, 0))
    pt = int(ly.p(14, pl))
    pr = int(ly.p(15, pl))
    pb = int(ly.p(16, pt))
    if min(pl, pt, pr, pb) < 0:
        raise ModelFormatError(f"Convolution {ly.name}: automatic (SAME) padding not supported")
    if float(ly.p(18, 0.0)) != 0.0:
        raise ModelFormatError(f"Convolution {ly.name}: non-zero pad_value not supported")
    w = ly.weights["weight"]
    in_ch, rem = divmod(w.size, num_output * kh * kw)
    if rem or in_ch <= 0:
        raise ModelFormatError(f"Convolution {ly.name}: weight size {w.size} does not factor")
    inputs = [b.blob(ly.inputs[0]), b.const(ly.name + "_W", w.reshape(num_output, in_ch, kh, kw))]
    if "bias" in ly.weights:
        inputs.append(b.const(ly.name + "_B", ly.weights["bias"]))
    act = int(ly.p(9, 0))
    conv_out = out if act == 0 else b.name(ly.name + "_pre")
    b.node(
        "Conv",
        inputs,
        conv_out,
        kernel_shape=[kh, kw],
        strides=[sh, sw],
        dilations=[dh, dw],
        pads=[pt, pl, pb, pr],
    )
    if act == 1:
        b.node("Relu", [conv_out], out)
    elif act == 2:
        slope = ly.p(10, (0.0,))
        b.node("LeakyRelu", [conv_out], out, alpha=float(slope[0]))  # type: ignore[index]
    elif act != 0:
        raise ModelFormatError(f"Convolution {ly.name}: fused activation {act} not supported")


def _prelu(b: _Builder, ly: NcnnLayer, out: str) -> None:
    """``PReLU(x) = s*x + (1-s)*relu(x)``, as Relu/Mul/Add rather than ONNX ``PRelu``.

    Why: onnxruntime's CPU NCHWc layout transformer (the blocked convolutions that make
    ORT_ENABLE_ALL fast) does not handle ``PRelu``, so every ``PRelu`` between two
    convolutions costs a ReorderOutput + ReorderInput pair. Relu and per-channel Mul/Add
    stay in the blocked layout. Measured on 2 cores, compact model, 148x148: 178 -> 143 ms.
    Same values up to float rounding (max 1e-6 on the output).
    """
    slope = ly.weights["slope"]
    shape = (slope.size, 1, 1) if slope.size > 1 else (1,)
    x = b.blob(ly.inputs[0])
    s = b.const(ly.name + "_s", slope.reshape(shape))
    one_minus_s = b.const(ly.name + "_1ms", (1.0 - slope).astype(np.float32).reshape(shape))
    pos = b.node("Relu", [x], b.name(ly.name + "_relu"))
    pos = b.node("Mul", [pos, one_minus_s], b.name(ly.name + "_pos"))
    lin = b.node("Mul", [x, s], b.name(ly.name + "_lin"))
    b.node("Add", [pos, lin], out)


def _interp(b: _Builder, ly: NcnnLayer, out: str) -> None:
    mode = int(ly.p(0, 0))
    hs, ws = float(ly.p(1, 1.0)), float(ly.p(2, 1.0))
    if int(ly.p(3, 0)) or int(ly.p(4, 0)) or int(ly.p(5, 0)):
        raise ModelFormatError(f"Interp {ly.name}: fixed/dynamic output size not supported")
    align = int(ly.p(6, 0))
    scales = b.const(ly.name + "_scales", np.array([1.0, 1.0, hs, ws], dtype=np.float32))
    src = [b.blob(ly.inputs[0]), "", scales]
    if mode == 1:
        b.node(
            "Resize",
            src,
            out,
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )
    elif mode in (2, 3):
        b.node(
            "Resize",
            src,
            out,
            mode="linear" if mode == 2 else "cubic",
            coordinate_transformation_mode="align_corners" if align else "half_pixel",
            cubic_coeff_a=-0.75,
            exclude_outside=0,
        )
    else:
        raise ModelFormatError(f"Interp {ly.name}: resize_type {mode} not supported")


def _binary(b: _Builder, ly: NcnnLayer, out: str) -> None:
    ops = {0: "Add", 1: "Sub", 2: "Mul", 3: "Div", 4: "Max", 5: "Min"}
    op = int(ly.p(0, 0))
    if op not in ops:
        raise ModelFormatError(f"BinaryOp {ly.name}: op_type {op} not supported")
    if int(ly.p(1, 0)):
        other = b.const(ly.name + "_b", np.array(float(ly.p(2, 0.0)), dtype=np.float32))
        b.node(ops[op], [b.blob(ly.inputs[0]), other], out)
    else:
        if len(ly.inputs) != 2:
            raise ModelFormatError(f"BinaryOp {ly.name}: expected 2 inputs")
        b.node(ops[op], [b.blob(x) for x in ly.inputs], out)


def _eltwise(b: _Builder, ly: NcnnLayer, out: str) -> None:
    op = int(ly.p(0, 1))
    ins = [b.blob(x) for x in ly.inputs]
    if op in (0, 2):
        b.node("Mul" if op == 0 else "Max", ins, out)
        return
    if op != 1:
        raise ModelFormatError(f"Eltwise {ly.name}: op_type {op} not supported")
    coeffs = ly.p(1, ())
    if not coeffs:
        coeffs = (1.0,) * len(ins)
    if len(coeffs) != len(ins):  # type: ignore[arg-type]
        raise ModelFormatError(f"Eltwise {ly.name}: {len(coeffs)} coeffs for {len(ins)} inputs")
    terms = []
    for x, c in zip(ins, coeffs, strict=True):  # type: ignore[arg-type]
        if float(c) == 1.0:
            terms.append(x)
        else:
            cst = b.const(ly.name + "_c", np.array(float(c), dtype=np.float32))
            terms.append(b.node("Mul", [x, cst], b.name(ly.name + "_scaled")))
    acc = terms[0]
    for i, t in enumerate(terms[1:], start=1):
        acc = b.node("Add", [acc, t], out if i == len(terms) - 1 else b.name(ly.name + "_acc"))
    if len(terms) == 1:
        b.node("Identity", [acc], out)


def to_onnx(net: NcnnNet, graph_name: str = "realesrgan") -> onnx.ModelProto:
    """Translate ``net`` into an ONNX model (float32 weights, dynamic H/W)."""
    b = _Builder()
    in_blob, out_blob = net.input_blob, net.output_blob
    b.alias[in_blob] = "input"
    for ly in net.layers:
        if ly.type == "Input":
            continue
        if ly.type == "Split":
            for o in ly.outputs:
                b.alias[o] = b.blob(ly.inputs[0])
            continue
        if len(ly.outputs) != 1:
            raise ModelFormatError(f"{ly.type} {ly.name}: expected one output")
        out = "output" if ly.outputs[0] == out_blob else ly.outputs[0]
        b.alias[ly.outputs[0]] = out
        if ly.type == "Convolution":
            _conv(b, ly, out)
        elif ly.type == "PReLU":
            _prelu(b, ly, out)
        elif ly.type == "ReLU":
            slope = float(ly.p(0, 0.0))
            if slope == 0.0:
                b.node("Relu", [b.blob(ly.inputs[0])], out)
            else:
                b.node("LeakyRelu", [b.blob(ly.inputs[0])], out, alpha=slope)
        elif ly.type == "BinaryOp":
            _binary(b, ly, out)
        elif ly.type == "Eltwise":
            _eltwise(b, ly, out)
        elif ly.type == "Concat":
            axis = int(ly.p(0, 0))
            b.node("Concat", [b.blob(x) for x in ly.inputs], out, axis=axis + 1)
        elif ly.type == "Interp":
            _interp(b, ly, out)
        elif ly.type == "PixelShuffle":
            mode = int(ly.p(1, 0))
            b.node(
                "DepthToSpace",
                [b.blob(ly.inputs[0])],
                out,
                blocksize=int(ly.p(0, 1)),
                mode="CRD" if mode == 0 else "DCR",
            )
        else:  # parse_param already refuses these; keep the export total anyway
            raise ModelFormatError(f"no ONNX mapping for ncnn layer {ly.type} ({ly.name})")
    if b.blob(out_blob) != "output":
        raise ModelFormatError("network output is an alias of another blob; cannot export")
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "height", "width"])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, None, None])
    graph = helper.make_graph(b.nodes, graph_name, [x], [y], initializer=b.inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="hybridsr.imaging.realesrgan",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model
