"""OpenVINO's copy of a converted model: each PReLU as one ``PRelu`` op again.

Why: the converter writes PReLU as ``s*x + (1-s)*relu(x)`` (Relu, two Mul, Add) because
onnxruntime's blocked-layout convolutions cannot fuse ``PRelu`` (see onnx_export._prelu).
OpenVINO is the other way round: it fuses ``PRelu`` into the preceding convolution but runs
the four ops as separate passes over the 64-channel maps. Measured on 2 cores, compact
model, 404² input, CPU time: float32 0.98 -> 0.86 s, bf16 0.56 -> 0.47 s. The values are
the same up to float rounding; exact stays within 1/255 of the ncnn reference (tested).
Built on first use from the cached float model (imports onnx, a fraction of a second) and
cached beside it.
"""

from __future__ import annotations

from pathlib import Path

from .cache import write_atomic

__all__ = ["cached_native_prelu", "native_prelu_path"]


#: Bump when `fuse_prelu` changes, so old copies are not reused.
PRELU_VERSION = "1"


def native_prelu_path(float_path: Path) -> Path:
    """Where the native-PReLU copy of ``float_path`` (a content-keyed cache file) lives."""
    float_path = Path(float_path)
    return float_path.with_name(f"{float_path.stem}-prelu-v{PRELU_VERSION}.onnx")


def cached_native_prelu(float_path: Path) -> Path:
    """The native-PReLU copy of ``float_path``, built on a miss."""
    target = native_prelu_path(float_path)
    if not target.is_file():
        import onnx

        model = onnx.load(str(float_path))
        fuse_prelu(model)
        write_atomic(target, model.SerializeToString())
    return target


def fuse_prelu(model) -> int:
    """Replace each ``Add(Mul(Relu(x), 1-s), Mul(x, s))`` by ``PRelu(x, s)``, in place.

    Returns how many were replaced. Only the exporter's exact pattern is touched.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    users: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    dropped: set[int] = set()
    replaced: dict[int, object] = {}
    for add in graph.node:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        pos, lin = (producer.get(i) for i in add.input)
        if not (pos and lin and pos.op_type == "Mul" and lin.op_type == "Mul"):
            continue
        relu = producer.get(pos.input[0])
        if relu is None or relu.op_type != "Relu" or pos.input[1] not in consts:
            continue
        x, slope = relu.input[0], lin.input[1]
        if lin.input[0] != x or slope not in consts:
            continue
        if any(users.get(o, 0) != 1 for o in (relu.output[0], pos.output[0], lin.output[0])):
            continue
        if not (abs(consts[pos.input[1]] - (1.0 - consts[slope])) < 1e-6).all():
            continue
        node = helper.make_node("PRelu", [x, slope], [add.output[0]], name=add.name + "_prelu")
        replaced[id(add)] = node
        dropped.update(id(n) for n in (relu, pos, lin))
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return len(replaced)
