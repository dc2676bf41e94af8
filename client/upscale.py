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
    """Upscale ``args.input`` into ``args.output`` with a per-tile progress bar on a tty.

    Alpha, greyscale and EXIF orientation are kept as the edge jobs keep them
    (`sdk/inputs.py`): the alpha plane is upscaled by the same model and re-attached.
    """
    from hybridsr.sdk.errors import HybridSRError
    from hybridsr.sdk.inputs import as_input_kind, prepare_image, upscale_alpha

    try:
        prepared = prepare_image(args.input)
    except HybridSRError as exc:
        raise UpscaleError(str(exc)) from None
    image = prepared.rgb
    started = time.perf_counter()
    how = args.model
    if args.model == "lanczos":
        from hybridsr.imaging.lightsr import LanczosSR

        sr = LanczosSR()
        out = sr.upscale(image, args.scale)
    else:
        out, how, sr = _realesrgan(args, image)
    alpha = prepared.alpha
    if alpha is not None:
        alpha = upscale_alpha(alpha, args.scale, sr, (out.shape[1], out.shape[0]))
    try:
        _save(as_input_kind(prepared, out, alpha), args.output)
    except (OSError, ValueError) as exc:
        raise UpscaleError(f"cannot write output: {exc}") from None
    print(f"{args.input} {image.shape[1]}x{image.shape[0]} → {args.output} "
          f"{out.shape[1]}x{out.shape[0]} with {how} in "
          f"{time.perf_counter() - started:.2f}s", file=sys.stderr)
    return 0


def _save(image, path) -> None:
    """PNG through the fast writer (imaging/pngwrite.py), other formats through Pillow."""
    from hybridsr.imaging.pngwrite import MODES, write_png

    if str(path).lower().endswith(".png") and image.mode in MODES:
        write_png(image, path)
    else:  # compress_level 1, if PNG after all: a few % larger than 6, 4-5x faster
        image.save(path, compress_level=1)


class _OneScale:
    """A RealESRGAN model (built for one scale) as a DeviceSR, for the alpha plane."""

    def __init__(self, model) -> None:
        self.model, self.name = model, "realesrgan"

    def upscale(self, image, scale: int):
        return self.model.upscale(image)


def _realesrgan(args: argparse.Namespace, image):
    from hybridsr.imaging.realesrgan import ModelFormatError, RealESRGAN

    try:
        model = RealESRGAN(args.model, scale=args.scale, threads=args.threads, tile=args.tile,
                           runtime=args.runtime, precision=args.precision)
    except (ModelFormatError, FileNotFoundError, ImportError) as exc:
        raise UpscaleError(f"cannot load {args.model}: {exc}") from None
    if args.quiet or not sys.stderr.isatty():
        return model.upscale(image), _how(args.model, model), _OneScale(model)
    from tqdm import tqdm

    bar = tqdm(desc="upscale", unit="tile", file=sys.stderr, leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        return model.upscale(image, progress=progress), _how(args.model, model), _OneScale(model)
    finally:
        bar.close()


def _how(name: str, model) -> str:
    """What ran, for the summary line; int8 names the tiles its guard computed in float."""
    floats = getattr(model.engine, "float_runs", 0)
    guard = f", {floats} graphics-like tile(s) in float" if floats else ""
    return f"{name} ({model.runtime}, {model.precision}{guard}, tile {model.tile})"
