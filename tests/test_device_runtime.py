"""The device's SR runtime: which one `auto` picks, its cache, overrides, precisions, tiles.

Real onnxruntime and OpenVINO sessions on the real converted Real-ESRGAN model; the
OpenVINO cases are skipped where it is not installed (the dev extra installs it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hybridsr.imaging.realesrgan import RealESRGAN
from hybridsr.imaging.realesrgan import runtime as rt
from hybridsr.imaging.realesrgan.upscaler import auto_tile

GOLDEN = Path(__file__).parent / "golden" / "realesrgan"
HAVE_OPENVINO = "openvino" in rt.available_runtimes()
needs_openvino = pytest.mark.skipif(not HAVE_OPENVINO, reason="OpenVINO not installed")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDSR_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
    return RealESRGAN(tile=0, runtime="onnxruntime").onnx_path


@pytest.fixture(scope="module")
def built_models(tmp_path_factory) -> Path:
    """A model cache with the compact x4 model and its int8 and native-PReLU copies."""
    from hybridsr.imaging.realesrgan.prelu import cached_native_prelu
    from hybridsr.imaging.realesrgan.quantize import cached_int8

    root = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYBRIDSR_CACHE_DIR", str(root))
        float_path = RealESRGAN(tile=0, runtime="onnxruntime").onnx_path
        cached_int8(float_path)  # built once here: seconds each
        cached_native_prelu(cached_int8(float_path, "openvino"))
        cached_native_prelu(float_path)
    return root / "realesrgan"


@pytest.fixture
def int8_models(built_models) -> Path:
    """This test's private cache, holding the prebuilt float and int8 models."""
    target = rt.cache_dir() / "realesrgan"
    shutil.copytree(built_models, target, dirs_exist_ok=True)
    return target


def _png(name: str) -> np.ndarray:
    return np.asarray(Image.open(GOLDEN / name).convert("RGB"))


def _photos() -> list[np.ndarray]:
    """Real photographs (scikit-image), 64x64 crops: what `fast` is judged on."""
    from skimage import data

    return [data.astronaut()[100:164, 180:244], data.chelsea()[80:144, 150:214],
            data.coffee()[150:214, 250:314]]


def _user_photos() -> list[np.ndarray]:
    """256x256 centre crops of the two photos int8 found hardest: what a user upscales."""
    from skimage import data

    return [data.astronaut()[128:384, 128:384], data.coffee()[72:328, 172:428]]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_auto_takes_the_only_installed_runtime_without_measuring(onnx_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed

    def measure(*args):
        raise AssertionError("measured with one runtime installed")

    assert rt.available_runtimes() == ["onnxruntime"]
    assert rt.choose_runtime(onnx_path, measure=measure) == "onnxruntime"
    with pytest.raises(rt.RuntimeUnavailable, match=r"hybridsr\[openvino\]"):
        RealESRGAN(runtime="openvino")


@needs_openvino
def test_auto_measures_once_then_reads_the_cache(onnx_path):
    calls: list[tuple[str, str]] = []

    def measure(path, candidate, threads):
        calls.append(candidate)
        return rt.measure_candidate(path, candidate, threads)

    found = rt.candidates("exact", rt.available_runtimes())
    first = rt.choose(onnx_path, "exact", 2, found, measure=measure)
    assert sorted(calls) == [("onnxruntime", "f32"), ("openvino", "f32")]
    entry = next(iter(json.loads(rt._choice_file().read_text()).values()))
    fastest = min(entry["seconds"], key=entry["seconds"].get)
    assert "/".join(first) == f"{entry['runtime']}/{entry['compute']}" == fastest
    calls.clear()
    assert rt.choose(onnx_path, "exact", 2, found, measure=measure) == first
    assert calls == []  # a second process start does not measure again
    fast = [c for c in rt.candidates("fast", rt.available_runtimes()) if c[1] != "int8"]
    rt.choose(onnx_path, "fast", 2, fast, measure=measure)  # another precision: its own
    assert sorted(calls) == [("onnxruntime", "f32"), ("openvino", "reduced")]


def test_auto_takes_the_fastest_measured_combination_for_fast(onnx_path):
    """Whatever wins the measurement is what `auto` runs, int8 included."""
    found = [("onnxruntime", "f32"), ("onnxruntime", "int8"), ("openvino", "reduced")]
    for winner in found:
        times = {c: (0.1 if c == winner else 0.3) for c in found}
        rt._choice_file().unlink(missing_ok=True)
        measure = lambda p, c, t, times=times: times[c]  # noqa: E731
        assert rt.choose(onnx_path, "fast", 2, found, measure=measure) == winner
    seen: list = []

    def missing_onnx(path, candidate, threads):  # an int8 copy that cannot be built here
        seen.append(candidate)
        if candidate[1] == "int8":
            raise ImportError("No module named 'onnx'")
        return 0.5

    rt._choice_file().unlink()
    assert rt.choose(onnx_path, "fast", 2, found[:2], measure=missing_onnx) == found[0]
    assert seen == found[:2]


@needs_openvino
@pytest.mark.parametrize("cached", ["onnxruntime", "openvino"])
def test_the_cached_choice_decides_auto_and_an_override_beats_it(onnx_path, cached):
    rt.choose_runtime(onnx_path, "exact", 2)
    path = rt._choice_file()
    choices = json.loads(path.read_text())
    for entry in choices.values():
        entry["runtime"] = cached
    path.write_text(json.dumps(choices))
    assert RealESRGAN(threads=2, tile=0, runtime="auto").runtime == cached
    other = "openvino" if cached == "onnxruntime" else "onnxruntime"
    assert RealESRGAN(threads=2, tile=0, runtime=other).runtime == other


@pytest.mark.parametrize("runtime", ["onnxruntime", pytest.param("openvino", marks=needs_openvino)])
@pytest.mark.parametrize(("scale", "inp"), [(4, "astronaut32"), (2, "chelsea40x48")])
def test_exact_matches_the_ncnn_reference(runtime, scale, inp):
    img = _png(f"input_{inp}.png")
    up = RealESRGAN(scale=scale, threads=2, tile=0, runtime=runtime, precision="exact")
    assert (up.runtime, up.precision) == (runtime, "f32")
    ref = _png(f"realesr-animevideov3-x{scale}_{inp}.png")
    diff = np.abs(up.upscale(img).astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= 2 and (diff <= 1).mean() >= 0.999


def _fast_candidates() -> list[tuple[str, str]]:
    """What fast may run here: with `auto` or with either runtime named."""
    found = rt.candidates("fast", rt.available_runtimes(), int8=True)
    for runtime in rt.available_runtimes():
        found += rt.candidates("fast", [runtime], int8=True)
    return sorted(set(found))


@pytest.mark.parametrize("candidate", _fast_candidates(), ids="/".join)
def test_every_fast_candidate_stays_40db_from_exact(int8_models, candidate):
    """What fast may run, each one: >= 40 dB on real photos, and really reduced."""
    exact = RealESRGAN(threads=2, tile=0, runtime="onnxruntime", precision="exact")
    fast = RealESRGAN(threads=2, tile=0, runtime="onnxruntime", precision="exact")
    fast.engine = rt.build_engine(fast.onnx_path, candidate, 2)
    for photo in _photos() + _user_photos():
        a, b = exact.upscale(photo), fast.upscale(photo)
        assert _psnr(a, b) >= 40.0, candidate
        if fast.engine.precision != "f32":  # bf16/f16/int8 must really compute in it
            assert np.abs(a.astype(int) - b.astype(int)).max() > 0


@needs_openvino
def test_openvino_fast_computes_in_the_cpus_reduced_precision(int8_models):
    caps = rt._ov_precision(__import__("openvino").Core(), "fast")
    assert rt.reduced_float_cpu() == (caps != "f32")  # the flags say what OpenVINO finds
    up = RealESRGAN(threads=2, tile=0, runtime="openvino", precision="fast")
    assert up.precision in (caps, "int8")  # the measured faster of the two
    assert rt.build_engine(up.onnx_path, ("openvino", "reduced"), 2).precision == caps


def test_int8_is_offered_only_on_cpus_with_int8_dot_products(monkeypatch):
    both = ["onnxruntime", "openvino"]
    for has_int8 in (True, False):
        monkeypatch.setattr(rt, "int8_cpu", lambda has_int8=has_int8: has_int8)
        int8 = [c for c in rt.candidates("fast", both, int8=True) if c[1] == "int8"]
        assert int8 == ([("onnxruntime", "int8"), ("openvino", "int8")] if has_int8 else [])
    assert rt.candidates("fast", ["onnxruntime"], int8=False) == [("onnxruntime", "f32")]
    assert all(c[1] == "f32" for c in rt.candidates("exact", both, int8=True))


def _synthetic_graphics() -> dict[str, np.ndarray]:
    """Inputs no photo is like: text on white, 4 px checkers, saturated colour blocks."""
    from PIL import Image, ImageDraw

    text = Image.new("RGB", (96, 96), "white")
    draw = ImageDraw.Draw(text)
    for i in range(8):
        draw.text((2, 2 + 12 * i), "The quick brown fox", fill="black")
    yy, xx = np.mgrid[0:96, 0:96]
    checker = ((yy // 4 + xx // 4) % 2 * 255).astype(np.uint8)
    blocks = np.stack([xx * 2, yy * 2, 255 - xx * 2], -1).astype(np.uint8)
    blocks[24:72, 24:72] = [255, 0, 0]
    return {"text": np.asarray(text), "checker": np.stack([checker, checker, 255 - checker], -1),
            "blocks": blocks}


def test_graphics_are_told_from_photos():
    from hybridsr.imaging.realesrgan.guard import graphics_like

    def nchw(img: np.ndarray) -> np.ndarray:
        return (img.transpose(2, 0, 1)[None] / 255.0).astype(np.float32)

    assert not any(graphics_like(nchw(p)) for p in _photos() + _user_photos())
    assert all(graphics_like(nchw(g)) for g in _synthetic_graphics().values())


@pytest.mark.skipif(not rt.int8_cpu(), reason="no int8 dot products on this CPU")
@pytest.mark.parametrize("runtime", rt.available_runtimes())
def test_int8_hands_graphics_to_float_and_keeps_photos(int8_models, runtime):
    exact = RealESRGAN(threads=2, tile=0, runtime="onnxruntime", precision="exact")
    up = RealESRGAN(threads=2, tile=0, runtime="onnxruntime", precision="exact")
    up.engine = rt.build_engine(up.onnx_path, (runtime, "int8"), 2)
    for name, img in _synthetic_graphics().items():  # int8 alone: 19-39 dB on these
        assert _psnr(exact.upscale(img), up.upscale(img)) >= 40.0, name
    photo = _photos()[0]
    int8_alone = up.engine.int8.run  # the photo must still be computed in int8
    x = (photo.transpose(2, 0, 1)[None] / 255.0).astype(np.float32)
    assert np.array_equal(up.engine.run(x), int8_alone(x))
    assert up.engine.float_runs == len(_synthetic_graphics())  # what reports count


@pytest.mark.skipif(not rt.int8_cpu(), reason="no int8 dot products on this CPU")
def test_the_int8_model_is_built_once_beside_the_float_one(int8_models, monkeypatch):
    import onnx

    from hybridsr.imaging.realesrgan import quantize

    float_path = RealESRGAN(tile=0, runtime="onnxruntime").onnx_path
    q = quantize.int8_path(float_path)
    assert q.parent == float_path.parent and q.is_file() and "-int8-" in q.name

    def rebuild(path):
        raise AssertionError("rebuilt a cached int8 model")

    monkeypatch.setattr(quantize, "_quantize", rebuild)
    assert quantize.cached_int8(float_path) == q
    nodes = onnx.load(str(q)).graph.node
    convs = [n for n in nodes if n.op_type == "Conv"]
    fed_by_dq = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
    quantized = [c.input[1] in fed_by_dq for c in convs]  # int8 weights
    assert quantized == [i not in quantize.FLOAT_CONVS for i in range(len(convs) - 1)] + [False]
    assert 0 in quantize.FLOAT_CONVS and sum(quantized) >= len(convs) - 4  # most are int8
    ov = quantize.int8_path(float_path, "openvino")
    assert ov.is_file() and ov != q and quantize.cached_int8(float_path, "openvino") == ov
    other = float_path.with_name(float_path.name.replace("-x4-", "-x2-"))
    other.write_bytes(float_path.read_bytes())  # another model (name): another key
    assert quantize.int8_path(other) != q
    assert quantize.int8_path(float_path) == q  # stable


def _grey(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.stack([a] * 3, -1))


@needs_openvino
def test_openvinos_int8_keeps_scanned_text_and_grass_at_40db(int8_models):
    """The content int8 version 2 lost (page 36 dB, this grass crop 39; version 3: 41)."""
    from skimage import data

    exact = RealESRGAN(threads=2, tile=0, runtime="onnxruntime", precision="exact")
    fast = RealESRGAN(threads=2, tile=0, runtime="onnxruntime", precision="exact")
    fast.engine = rt.build_engine(fast.onnx_path, ("openvino", "int8"), 2)
    for crop in (data.page(), data.grass()[:128, :128]):
        assert _psnr(exact.upscale(_grey(crop)), fast.upscale(_grey(crop))) >= 40.0


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_each_runtime_gets_an_int8_model_it_runs_in_int8(int8_models, runtime, tmp_path):
    """onnxruntime fuses a quantized Conv into its int8 kernel only with the output
    quantized too (else it dequantizes and runs float32, slower than the float model);
    OpenVINO's copy leaves the outputs float (one rounding per layer)."""
    import onnx
    import onnxruntime as ort

    from hybridsr.imaging.realesrgan import quantize

    q = quantize.int8_path(RealESRGAN(tile=0, runtime="onnxruntime").onnx_path, runtime)
    nodes = onnx.load(str(q)).graph.node
    conv_outputs = {n.output[0] for n in nodes if n.op_type == "Conv"}
    requantized = [n for n in nodes if n.op_type == "QuantizeLinear" and n.input[0] in conv_outputs]
    assert len(requantized) == (14 if runtime == "onnxruntime" else 0)
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(q), opts, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]
    assert ops.count("QLinearConv") == (14 if runtime == "onnxruntime" else 0)


def test_smoothing_through_the_prelu_keeps_the_float_models_output(onnx_path):
    """SmoothQuant's scales cross each PReLU exactly: the float model computes the same."""
    import onnx
    import onnxruntime as ort

    from hybridsr.imaging.realesrgan import quantize

    model = onnx.load(str(onnx_path))
    before = model.SerializeToString()
    x = np.random.default_rng(3).random((1, 3, 24, 24), dtype=np.float32)
    stats = quantize._conv_input_stats(model, [x])
    quantize._smooth(model, stats, list(range(1, 17)))
    assert model.SerializeToString() != before  # weights really moved
    run = [ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
           for m in (before, model.SerializeToString())]
    np.testing.assert_allclose(run[1], run[0], atol=2e-5)


@needs_openvino
def test_openvino_runs_the_int8_model_with_native_prelu(int8_models):
    """OpenVINO fuses PRelu into its int8 convolutions (onnxruntime runs the exporter's
    four ops faster): its int8 engine compiles the native-PReLU copy, same quality."""
    import onnx

    from hybridsr.imaging.realesrgan.prelu import native_prelu_path
    from hybridsr.imaging.realesrgan.quantize import int8_path

    path = RealESRGAN(tile=0, runtime="onnxruntime").onnx_path
    engine = rt.build_engine(path, ("openvino", "int8"), 2).int8  # past the graphics guard
    assert engine._path == native_prelu_path(int8_path(path, "openvino"))
    assert engine.precision == "int8"
    ops = [n.op_type for n in onnx.load(str(engine._path)).graph.node]
    assert ops.count("PRelu") == 17 and "Relu" not in ops and "QuantizeLinear" in ops
    fused = RealESRGAN(threads=2, tile=0, runtime="onnxruntime")
    fused.engine = engine
    unfused = RealESRGAN(threads=2, tile=0, runtime="onnxruntime")
    unfused.engine = rt.OpenVinoEngine(int8_path(path, "openvino"), 2, "int8")
    exact = RealESRGAN(threads=2, tile=0, runtime="onnxruntime", precision="exact")
    for photo in _photos():  # the same quality: only the int8 pipeline's rounding differs
        ref = exact.upscale(photo)
        a, b = _psnr(ref, fused.upscale(photo)), _psnr(ref, unfused.upscale(photo))
        assert a >= 40.0 and abs(a - b) < 0.5


@needs_openvino
def test_openvino_runs_a_native_prelu_copy_with_the_same_output(int8_models):
    import onnx

    from hybridsr.imaging.realesrgan.prelu import native_prelu_path

    up = RealESRGAN(threads=2, tile=0, runtime="openvino", precision="exact")
    assert up.engine._path == native_prelu_path(up.onnx_path)  # what OpenVINO compiled
    ops = [n.op_type for n in onnx.load(str(up.engine._path)).graph.node]
    assert ops.count("PRelu") == 17 and "Relu" not in ops and ops.count("Add") == 1
    ort = RealESRGAN(threads=2, tile=0, runtime="onnxruntime", precision="exact")
    for photo in _photos():
        diff = np.abs(up.upscale(photo).astype(int) - ort.upscale(photo).astype(int))
        assert diff.max() <= 1


@needs_openvino
def test_big_models_get_no_native_prelu_copy(onnx_path):
    """RRDB models (over 10 MB) have no PReLU: copying 67 MB would change nothing."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    model.graph.initializer.append(  # unused 12 MB: the size of a heavy model, same graph
        numpy_helper.from_array(np.zeros(3 << 20, np.float32), "padding"))
    big = rt.cache_dir() / "realesrgan" / "big-model.onnx"
    big.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(big))
    engine = rt.build_engine(big, ("openvino", "f32"), 1)
    assert engine._path == big and sorted(p.name for p in big.parent.iterdir()) == [big.name]


@pytest.mark.skipif(not rt.int8_cpu(), reason="no int8 dot products on this CPU")
def test_fast_on_onnxruntime_uses_int8_for_the_builtin_model_only(int8_models):
    up = RealESRGAN(threads=2, tile=0, runtime="onnxruntime", precision="fast")
    assert up.precision in ("f32", "int8")  # the measured faster one
    entry = next(iter(json.loads(rt._choice_file().read_text()).values()))
    assert up.precision == entry["compute"]
    custom = RealESRGAN(str(up.onnx_path), threads=2, tile=0, runtime="onnxruntime",
                        precision="fast", overlap=10)
    assert custom.precision == "f32"  # a custom model's int8 quality is not known


def test_the_library_default_stays_onnxruntime():
    assert RealESRGAN(tile=0).runtime == "onnxruntime"  # the edge's light SR and GanSR


def test_bad_choices_are_clear_errors():
    with pytest.raises(ValueError, match="runtime"):
        RealESRGAN(runtime="tensorrt")
    with pytest.raises(ValueError, match="precision"):
        RealESRGAN(precision="int4")
    from hybridsr.imaging.lightsr import create_backend

    with pytest.raises(ValueError, match="runtime"):
        create_backend("auto", runtime="tensorrt")  # not swallowed into a Lanczos fallback


def test_tiles_follow_the_memory():
    small = auto_tile("realesr-animevideov3-x4", 18, memory=256 << 20)
    big = auto_tile("realesr-animevideov3-x4", 18, memory=8 << 30)
    rrdb = auto_tile("realesrgan-x4plus-x4", 48, memory=8 << 30)
    assert 64 <= small < big <= 1024 and rrdb < big
    up = RealESRGAN(runtime="onnxruntime", tile=None)  # sized from what is available now
    assert 64 <= up.tile <= 1024


def test_upscale_cli_imports_no_client_stack():
    code = ("import sys, hybridsr.client.cli, hybridsr.client.upscale; "
            "print(sorted(m for m in ('aiohttp', 'pydantic', 'msgpack', 'tqdm', 'onnx') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("runtime", ["onnxruntime", pytest.param("openvino", marks=needs_openvino)])
def test_cached_model_copies_run_without_onnx_or_the_quantizer(int8_models, runtime):
    """A warm start loads neither the model builders nor psutil/importlib.metadata."""
    code = ("import sys; from hybridsr.imaging.realesrgan import RealESRGAN; "
            f"up = RealESRGAN(runtime={runtime!r}, precision='fast', threads=2, tile=0); "
            "print(up.precision, sorted(m for m in ('onnx', 'onnxruntime.quantization', "
            "'psutil', 'importlib.metadata') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    precision, loaded = out.stdout.strip().split(" ", 1)
    assert loaded == "[]"
    if rt.int8_cpu():
        assert precision in ("int8", "f32", "bf16", "f16")


@pytest.mark.parametrize("runtime", ["onnxruntime", pytest.param("openvino", marks=needs_openvino)])
def test_upscale_cli_runtime_and_precision(tmp_path, runtime, int8_models):
    photo = _photos()[0][:40, :48]
    Image.fromarray(photo).save(tmp_path / "in.png")
    proc = subprocess.run(
        [sys.executable, "-m", "hybridsr.client", "upscale", str(tmp_path / "in.png"), "-o",
         str(tmp_path / "out.png"), "--runtime", runtime, "--precision", "fast", "--threads", "2"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"({runtime}, " in proc.stderr
    out = np.asarray(Image.open(tmp_path / "out.png"))
    exact = RealESRGAN(threads=2, tile=0, runtime="onnxruntime").upscale(photo)
    assert _psnr(out, exact) >= 40.0


def test_the_sdk_client_passes_runtime_and_precision_to_device_sr(int8_models):
    from hybridsr.sdk import AsyncHybridClient

    client = AsyncHybridClient("ws://127.0.0.1:9", runtime="onnxruntime", precision="exact")
    assert (client.backend.runtime, client.backend.precision) == ("onnxruntime", "f32")
    client = AsyncHybridClient("ws://127.0.0.1:9", runtime="onnxruntime", precision="fast")
    direct = RealESRGAN(runtime="onnxruntime", precision="fast", tile=0)
    assert (client.backend.runtime, client.backend.precision) == ("onnxruntime", direct.precision)
    with pytest.raises(ValueError, match="precision"):
        AsyncHybridClient("ws://127.0.0.1:9", precision="fastest")


def test_the_start_up_shortcuts_read_what_the_libraries_read():
    import importlib.metadata

    import psutil

    from hybridsr.imaging.realesrgan.upscaler import available_memory

    for dist in rt.available_runtimes():
        assert rt._version(dist) == importlib.metadata.version(dist)
    assert rt._version("no-such-dist") == "-"
    ours, theirs = available_memory(), psutil.virtual_memory().available
    assert abs(ours - theirs) <= 0.05 * theirs


@needs_openvino
def test_openvino_loads_without_its_converter_and_leaves_it_importable():
    code = ("import sys; from hybridsr.imaging.realesrgan.runtime import _import_openvino; "
            "_import_openvino(); print('openvino.tools.ovc' in sys.modules); "
            "import openvino.tools.ovc; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "ok"]


@needs_openvino
def test_one_engine_serves_concurrent_threads():
    from concurrent.futures import ThreadPoolExecutor

    up = RealESRGAN(threads=1, tile=0, runtime="openvino")
    photos = _photos()
    alone = [up.upscale(p) for p in photos]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(up.upscale, photos))
    assert all((a == b).all() for a, b in zip(alone, together, strict=True))


@needs_openvino
def test_a_cache_that_cannot_be_written_costs_speed_not_the_runtime(onnx_path, monkeypatch):
    """Root ignores file modes, so the failing write is injected where the copies are made."""
    from hybridsr.imaging.realesrgan import prelu, quantize

    def read_only(path, data):
        raise PermissionError(13, "Read-only file system", str(path))

    monkeypatch.setattr(prelu, "write_atomic", read_only)
    monkeypatch.setattr(quantize, "write_atomic", read_only)
    float_path = rt.cache_dir() / "realesrgan" / onnx_path.name
    float_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(onnx_path, float_path)
    engine = rt.build_engine(float_path, ("openvino", "f32"), 1)
    assert engine._path == float_path  # the converted model as is, no PReLU copy
    found = [("openvino", "f32"), ("onnxruntime", "int8")]
    assert rt.choose(float_path, "fast", 1, found) == ("openvino", "f32")  # int8 left out
