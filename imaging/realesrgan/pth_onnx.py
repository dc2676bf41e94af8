"""The ONNX graph of a ``.pth`` network, built from its weights with the ncnn path's builder.

The layers are collected as an equivalent :class:`~.ncnn.NcnnNet` and handed to
:func:`.onnx_export.to_onnx`, so both conversions give the same fast graph.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .cache import META_OVERLAP, META_SCALE
from .ncnn import NcnnLayer, NcnnNet
from .onnx_export import to_onnx
from .pth_detect import PthArch

META_ARCH = "hybridsr.arch"


class _Net:
    """Collects ncnn-style layers so :func:`to_onnx` can build the graph."""

    def __init__(self, sd: dict[str, np.ndarray]) -> None:
        self.sd = sd
        self.layers = [NcnnLayer("Input", "input", (), ("data",), {})]
        self._n = 0

    def _out(self) -> str:
        self._n += 1
        return f"t{self._n}"

    def add(self, ltype: str, inputs: tuple[str, ...], params: dict, **weights: np.ndarray) -> str:
        out = self._out()
        self.layers.append(NcnnLayer(ltype, f"{ltype}_{self._n}", inputs, (out,), params, weights))
        return out

    def conv(self, key: str, x: str, lrelu: bool = False) -> str:
        w, b = self.sd[f"{key}.weight"], self.sd[f"{key}.bias"]
        k = int(w.shape[-1])
        params = {0: int(w.shape[0]), 1: k, 4: k // 2, 5: 1, 6: int(w.size)}
        if lrelu:
            params |= {9: 2, 10: (0.2,)}
        return self.add("Convolution", (x,), params, weight=w, bias=b)

    def nearest(self, x: str, s: int) -> str:
        return self.add("Interp", (x,), {0: 1, 1: float(s), 2: float(s)})

    def axpy(self, a: str, x: str) -> str:
        """``0.2 * a + x``, the residual scaling of RRDB."""
        return self.add("Eltwise", (a, x), {0: 1, 1: (0.2, 1.0)})


def _compact_layers(arch: PthArch, n: _Net) -> None:
    x = "data"
    for i in range(arch.num_conv + 1):
        x = n.conv(f"body.{2 * i}", x)
        slope = n.sd[f"body.{2 * i + 1}.weight"]
        x = n.add("PReLU", (x,), {0: int(slope.size)}, slope=slope)
    x = n.conv(f"body.{2 * arch.num_conv + 2}", x)
    x = n.add("PixelShuffle", (x,), {0: arch.scale})
    n.add("BinaryOp", (x, n.nearest("data", arch.scale)), {0: 0})


def _rrdb_layers(arch: PthArch, n: _Net) -> None:
    feat = n.conv("conv_first", "data")
    x = feat
    for b in range(arch.num_block):
        block_in = x
        for r in (1, 2, 3):
            feats = [x]
            for k in range(1, 5):
                cat = n.add("Concat", tuple(feats), {0: 0}) if k > 1 else x
                feats.append(n.conv(f"body.{b}.rdb{r}.conv{k}", cat, lrelu=True))
            x = n.axpy(n.conv(f"body.{b}.rdb{r}.conv5", n.add("Concat", tuple(feats), {0: 0})), x)
        x = n.axpy(x, block_in)
    x = n.add("BinaryOp", (feat, n.conv("conv_body", x)), {0: 0})
    x = n.conv("conv_up1", n.nearest(x, 2), lrelu=True)
    x = n.conv("conv_up2", n.nearest(x, 2), lrelu=True)
    n.conv("conv_last", n.conv("conv_hr", x, lrelu=True))


def _unshuffle_input(model: onnx.ModelProto, r: int, scale: int) -> None:
    """Put basicsr's ``pixel_unshuffle(x, r)`` in front of the graph, for any H and W.

    The input is reflect-padded at the bottom/right to a multiple of ``r`` (as
    ``RealESRGANer`` does before the model) and the output cropped back to ``scale * H, W``.
    ONNX ``SpaceToDepth`` orders channels ``(i*r + j)*C + c`` where torch has
    ``c*r*r + i*r + j``; the caller permutes ``conv_first``'s input channels to match.
    """
    g = model.graph
    for node in g.node:
        node.input[:] = ["input_s2d" if i == "input" else i for i in node.input]
        node.output[:] = ["output_full" if o == "output" else o for o in node.output]

    def const(name: str, values: list[int]) -> onnx.TensorProto:
        t = numpy_helper.from_array(np.array(values, dtype=np.int64), name)
        g.initializer.append(t)
        return t

    const("s2d_r", [r])
    const("s2d_scale", [scale])
    const("s2d_zeros", [0, 0, 0, 0, 0, 0])
    const("s2d_axes", [2, 3])
    const("s2d_begin", [0, 0])
    const("s2d_hw_idx", [2, 3])
    pre = [
        helper.make_node("Shape", ["input"], ["s2d_shape"]),
        helper.make_node("Gather", ["s2d_shape", "s2d_hw_idx"], ["s2d_hw"], axis=0),
        helper.make_node("Mod", ["s2d_hw", "s2d_r"], ["s2d_rem"]),
        helper.make_node("Sub", ["s2d_r", "s2d_rem"], ["s2d_pad0"]),
        helper.make_node("Mod", ["s2d_pad0", "s2d_r"], ["s2d_pad"]),
        helper.make_node("Concat", ["s2d_zeros", "s2d_pad"], ["s2d_pads"], axis=0),
        helper.make_node("Pad", ["input", "s2d_pads"], ["s2d_padded"], mode="reflect"),
        helper.make_node("SpaceToDepth", ["s2d_padded"], ["input_s2d"], blocksize=r),
    ]
    post = [
        helper.make_node("Mul", ["s2d_hw", "s2d_scale"], ["s2d_out_hw"]),
        helper.make_node(
            "Slice", ["output_full", "s2d_begin", "s2d_out_hw", "s2d_axes"], ["output"]
        ),
    ]
    nodes = pre + list(g.node) + post
    del g.node[:]
    g.node.extend(nodes)


def build_onnx(sd: dict[str, np.ndarray], arch: PthArch, graph_name: str) -> onnx.ModelProto:
    """The ONNX graph of ``arch`` with the weights of ``sd`` (checked against the layout)."""
    n = _Net(sd)
    if arch.kind == "SRVGGNetCompact":
        _compact_layers(arch, n)
    else:
        r = arch.unshuffle
        if r > 1:  # torch channel order c*r*r + i*r + j -> SpaceToDepth's (i*r + j)*C + c
            w = sd["conv_first.weight"]
            c = arch.num_in_ch
            w = w.reshape(w.shape[0], c, r * r, *w.shape[2:]).transpose(0, 2, 1, 3, 4)
            n.sd = {
                **sd,
                "conv_first.weight": np.ascontiguousarray(w).reshape(w.shape[0], -1, *w.shape[3:]),
            }
        _rrdb_layers(arch, n)
    model = to_onnx(NcnnNet(n.layers), graph_name=graph_name)
    if arch.unshuffle > 1:
        _unshuffle_input(model, arch.unshuffle, arch.scale)
    helper.set_model_props(
        model,
        {META_SCALE: str(arch.scale), META_OVERLAP: str(arch.overlap), META_ARCH: repr(arch)},
    )
    onnx.checker.check_model(model)
    return model
