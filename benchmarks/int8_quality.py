"""How far each ``fast`` computation of the compact model lands from exact, per image, and
its engine speed: the numbers behind ``precision="fast"``'s candidates (issue 11).

Per image (every scikit-image photo, greyscale ones as RGB, centre crops of at most 512²,
plus three synthetic hard cases: black text on white, 4 px complementary-colour checkers and
lines, saturated colour blocks on gradients): PSNR against exact (float32 onnxruntime, one
whole-image tile) of OpenVINO bf16/f16 and the int8 copy (:mod:`.quantize`) on OpenVINO and
onnxruntime. Then the engine time on one 404² input (a 384² tile with its 10 px border):
min of ``--repeats`` warm runs, wall and CPU time, with the load average (CPU time is the
fairer number on a shared machine).

    python benchmarks/int8_quality.py                 # table + speeds
    python benchmarks/int8_quality.py --only page grass --no-speed
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from hybridsr.imaging.realesrgan import RealESRGAN
from hybridsr.imaging.realesrgan import runtime as rt

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "grass", "page", "brick",
          "gravel", "moon", "text", "immunohistochemistry", "hubble_deep_field", "retina",
          "colorwheel", "cat", "logo")


def _crop(a: np.ndarray, side: int = 512) -> np.ndarray:
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    h, w = a.shape[:2]
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return np.ascontiguousarray(a[y0 : y0 + side, x0 : x0 + side, :3])


def synthetic() -> dict[str, np.ndarray]:
    """Hard cases no photo covers: rendered text, hard regular edges, saturated colours."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.new("RGB", (256, 256), "white")
    draw = ImageDraw.Draw(im)
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow without FreeType sizes
        font = ImageFont.load_default()
    for i in range(14):
        draw.text((4, 4 + 18 * i), "The quick brown fox jumps 0123456789 over", fill="black",
                  font=font)
    yy, xx = np.mgrid[0:256, 0:256]
    checker = (((yy // 4) + (xx // 4)) % 2 * 255).astype(np.uint8)
    lines = ((xx * (yy + 20) // 64) % 2 * 255).astype(np.uint8)
    colour = np.stack([xx, yy, 255 - xx], -1).astype(np.uint8)
    colour[64:192, 64:192] = [255, 0, 0]
    colour[96:160, 96:160] = [0, 0, 255]
    return {"syn_text": np.asarray(im), "syn_edges": np.stack([checker, lines, 255 - checker], -1),
            "syn_colour": colour}


def images(only: list[str] | None) -> dict[str, np.ndarray]:
    from skimage import data

    found = {n: _crop(getattr(data, n)()) for n in PHOTOS if hasattr(data, n)}
    found.update(synthetic())
    return {n: a for n, a in found.items() if not only or n in only}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def candidates() -> list[tuple[str, str]]:
    found = []
    if "openvino" in rt.available_runtimes():
        found += [("openvino", "reduced"), ("openvino", "int8")]
    return found + [("onnxruntime", "int8")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="image names to run (default: all)")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"int8 dot products: {rt.int8_cpu()}, reduced float: {rt.reduced_float_cpu()}")
    exact = RealESRGAN(threads=2, tile=0, runtime="onnxruntime", precision="exact")
    found = candidates()
    engines = {c: rt.build_engine(exact.onnx_path, c, 2) for c in found}
    names = ["/".join(c) + ("" if c[1] != "reduced" else f"({e.precision})")
             for c, e in engines.items()]
    print(f"{'image':22s}" + "".join(f"{n:>22s}" for n in names))
    worst = {c: float("inf") for c in found}
    fast = RealESRGAN(threads=2, tile=0, runtime="onnxruntime", precision="exact")
    for name, img in images(args.only).items():
        ref = exact.upscale(img)
        row = []
        for c, engine in engines.items():
            fast.engine = engine
            row.append(psnr(ref, fast.upscale(img)))
            worst[c] = min(worst[c], row[-1])
        print(f"{name:22s}" + "".join(f"{v:22.2f}" for v in row), flush=True)
    print(f"{'worst':22s}" + "".join(f"{worst[c]:22.2f}" for c in found))
    if args.no_speed:
        return
    x = np.random.default_rng(0).random((1, 3, 404, 404), dtype=np.float32)
    for c, engine in engines.items():
        engine.run(x)
        walls, cpus = [], []
        for _ in range(args.repeats):
            t, p = time.perf_counter(), time.process_time()
            engine.run(x)
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - p)
        print(f"{'/'.join(c):22s} 404² min wall {min(walls) * 1e3:6.0f} ms, min CPU "
              f"{min(cpus) * 1e3:6.0f} ms (load average {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    main()
