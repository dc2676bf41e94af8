"""Tile codecs measured: bytes, encode and decode time, PSNR against the lossless tile.

    python benchmarks/codecs.py            # 512² tiles, Real-ESRGAN x4 of a photo-like image

The planner's default codec costs (`server/costs.py`) come from this table on a 2-core
x86_64 machine; an edge refines its own from what it really sends.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from hybridsr.imaging.lightsr import create_backend
from hybridsr.protocol import CODECS, decode_image, encode_with

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synthetic import photo_like  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=int, default=128, help="LR tile side (x4 → HR tile)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sr = create_backend("auto", 2)
    tiles = [sr.upscale(photo_like(args.lr, args.lr, seed=s), 4) for s in range(3)]
    px = tiles[0].shape[0] * tiles[0].shape[1]
    print(f"{len(tiles)} tiles {tiles[0].shape[1]}x{tiles[0].shape[0]} ({sr.name} x4 of "
          f"photo_like), median of {args.repeat}")
    print("| codec | bytes/px | kB | encode ms | decode ms | PSNR dB |")
    print("|---|---|---|---|---|---|")
    for codec in CODECS.values():
        sizes, enc, dec, quality = [], [], [], []
        for tile in tiles:
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                blob = encode_with(tile, codec)
                enc.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                out = decode_image(blob)
                dec.append(time.perf_counter() - t0)
            sizes.append(len(blob.data))
            quality.append(psnr(out, tile))
        q = statistics.fmean(quality)
        shown = "lossless" if math.isinf(q) else f"{q:.1f}"
        print(f"| {codec.name} | {statistics.fmean(sizes) / px:.3f} | "
              f"{statistics.fmean(sizes) / 1000:.0f} | {statistics.median(enc) * 1000:.1f} | "
              f"{statistics.median(dec) * 1000:.1f} | {shown} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
