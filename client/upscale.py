"""`hybridsr upscale`: local super-resolution, nothing leaves the device.

Kept apart from the job commands so that this path imports only numpy, Pillow and the
inference runtime, not aiohttp and the client stack (start-up time is part of the job).
"""

from __future__ import annotations

import argparse
import sys
import time


class UpscaleError(Exception):
    """An input, model or output problem, reported in one line."""


def run_upscale(args: argparse.Namespace) -> int:
    """Upscale ``args.input`` into ``args.output`` with a per-tile progress bar on a tty."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(args.input) as im:
            image = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, Image.DecompressionBombError) as exc:
        raise UpscaleError(f"cannot read image {str(args.input)!r}: {exc}") from None
    started = time.perf_counter()
    how = args.model
    if args.model == "lanczos":
        from hybridsr.imaging.lightsr import LanczosSR

        out = LanczosSR().upscale(image, args.scale)
    else:
        out, how = _realesrgan(args, image)
    try:
        # compress_level 1: a few % larger than the default 6, and 4-5x faster to write
        Image.fromarray(out).save(args.output, compress_level=1)
    except (OSError, ValueError) as exc:
        raise UpscaleError(f"cannot write output: {exc}") from None
    print(f"{args.input} {image.shape[1]}x{image.shape[0]} → {args.output} "
          f"{out.shape[1]}x{out.shape[0]} with {how} in "
          f"{time.perf_counter() - started:.2f}s", file=sys.stderr)
    return 0


def _realesrgan(args: argparse.Namespace, image):
    from hybridsr.imaging.realesrgan import ModelFormatError, RealESRGAN

    try:
        model = RealESRGAN(args.model, scale=args.scale, threads=args.threads, tile=args.tile,
                           runtime=args.runtime, precision=args.precision)
    except (ModelFormatError, FileNotFoundError, ImportError) as exc:
        raise UpscaleError(f"cannot load {args.model}: {exc}") from None
    how = f"{args.model} ({model.runtime}, {model.precision}, tile {model.tile})"
    if args.quiet or not sys.stderr.isatty():
        return model.upscale(image), how
    from tqdm import tqdm

    bar = tqdm(desc="upscale", unit="tile", file=sys.stderr, leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        return model.upscale(image, progress=progress), how
    finally:
        bar.close()
