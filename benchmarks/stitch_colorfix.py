"""The device's stitch and colour fix at 2048², as a hybrid job on the H200 preset does them.

Why: at 2048² the device's stitch stage (colour-correcting each diffusion tile against the
LR image, feathering every tile into the result) took 0.6 s of a 2.3 s job. This times
those two steps alone on the job's shapes: 512² LR, x4, 128 px tiles overlapping by 16
(25 tiles), 8 of them diffusion tiles to colour-correct (wavelet), the rest light SR.
Prints the median of ``--repeats`` runs of each step and of the whole stage, in wall time
and in process CPU time (the fairer figure on a machine shared with other jobs; both
steps are single-threaded numpy/Pillow). Run it with OPENBLAS_NUM_THREADS=1 for the same.
With ``--threads N`` the tiles are colour-fixed and added from N threads, as the SDK
prepares each arriving edge tile in a worker thread (numpy and Pillow release the GIL).
``--keep`` keeps every run's images alive, as a job's caller does, so each run writes fresh
memory (page faults included). ``--quality`` instead compares the colour fix the device
runs (at x4 the low band comes from the LR image, `wavelet_color_fix_lr`) with the
full-resolution fix against the bicubic reference, on the 8 diffusion tiles with this
benchmark's drift and with a harder one.

    python benchmarks/stitch_colorfix.py [--repeats 7] [--threads 1] [--keep] [--quality]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from hybridsr.imaging.colorfix import wavelet_color_fix
from hybridsr.imaging.compose import as_tile, correct_edge_tile
from hybridsr.imaging.stitch import Stitcher
from hybridsr.imaging.tiles import crop_with_context, tile_grid
from hybridsr.protocol import TileSpec

LR, SCALE, TILE, OVERLAP, N_DIFFUSION = 512, 4, 128, 16, 8


def job() -> tuple[np.ndarray, list[TileSpec], dict[int, np.ndarray]]:
    """LR photo, tile specs, and an HR tile per spec (bicubic plus a tone drift for edge ones)."""
    from skimage import data

    lr = np.asarray(Image.fromarray(data.astronaut()).resize((LR, LR), Image.BICUBIC))
    hr_full = np.asarray(Image.fromarray(lr).resize((LR * SCALE,) * 2, Image.BICUBIC))
    specs, hrs = [], {}
    for t in tile_grid(LR, LR, TILE, OVERLAP):
        edge = t.index % 3 == 0 and sum(s.method == "diffusion" for s in specs) < N_DIFFUSION
        specs.append(TileSpec(index=t.index, x=t.x, y=t.y, w=t.w, h=t.h,
                              destination="edge" if edge else "device",
                              method="diffusion" if edge else "light", score=0.0))
        hr = hr_full[t.y * SCALE:(t.y + t.h) * SCALE, t.x * SCALE:(t.x + t.w) * SCALE]
        hrs[t.index] = np.clip(hr.astype(np.int16) + (12 if edge else 0), 0, 255).astype(np.uint8)
    return lr, specs, hrs


def run_once(lr, specs, hrs, clock=time.perf_counter, pool=None, keep=None
             ) -> tuple[float, float]:
    run = pool.map if pool is not None else map
    t0 = clock()
    fixes = run(lambda s: correct_edge_tile(lr, s, SCALE, hrs[s.index], "wavelet"), specs)
    fixed = dict(zip([s.index for s in specs], fixes, strict=True))
    t1 = clock()
    st = Stitcher(LR, LR, SCALE, [as_tile(s) for s in specs])
    list(run(lambda s: st.add(s.index, fixed[s.index]), specs))
    image = st.result()
    if keep is not None:  # as a job's caller does: the next run gets fresh memory
        keep.append((image, fixed))
    return t1 - t0, clock() - t1


def tone_error(img: np.ndarray, clean: np.ndarray) -> float:
    """Mean |difference| of 8x8 block means: the tone left wrong, fine texture averaged out."""
    n, m = clean.shape[0] // 8, clean.shape[1] // 8
    return float(np.abs((img - clean).reshape(n, 8, m, 8, -1).mean((1, 3))).mean())


def harder_drift(clean: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A tile with a smooth drift (±18), a tint and added texture; and that texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : clean.shape[0], 0 : clean.shape[1]] / clean.shape[0]
    drift = 18 * np.sin(2.5 * xx + 1.3 * yy + seed)[:, :, None] + [15, -10, 8]
    texture = 6 * (-1.0) ** np.indices(clean.shape[:2]).sum(0)[:, :, None]
    texture = texture + rng.normal(0, 3, clean.shape)
    return np.clip(np.rint(clean + drift + texture), 0, 255).astype(np.uint8), texture


def bicubic_reference(lr: np.ndarray, s: TileSpec) -> np.ndarray:
    """What the device compared against before: the LR tile with 2 px context, bicubic x4."""
    patch, dx, dy = crop_with_context(lr, as_tile(s), 2)
    big = np.asarray(Image.fromarray(patch).resize(
        (patch.shape[1] * SCALE, patch.shape[0] * SCALE), Image.BICUBIC))
    return big[dy * SCALE : (dy + s.h) * SCALE, dx * SCALE : (dx + s.w) * SCALE]


def quality(lr: np.ndarray, specs: list[TileSpec], hrs: dict[int, np.ndarray]) -> None:
    """Device colour fix vs the full-resolution one, and how much drift each leaves."""
    clean_full = np.asarray(Image.fromarray(lr).resize((LR * SCALE,) * 2, Image.BICUBIC))
    for harder in (False, True):
        rows = []
        for s in (s for s in specs if s.method == "diffusion"):
            box = (slice(s.y * SCALE, (s.y + s.h) * SCALE), slice(s.x * SCALE, (s.x + s.w) * SCALE))
            clean = clean_full[box].astype(float)
            tile, texture = harder_drift(clean, s.index) if harder else (hrs[s.index], None)
            device = correct_edge_tile(lr, s, SCALE, tile, "wavelet").astype(float)
            full = wavelet_color_fix(tile, bicubic_reference(lr, s)).astype(float)
            kept = [0.0, 0.0] if texture is None else [
                float(((img - clean) * texture).sum() / (texture * texture).sum())
                for img in (full, device)]
            d = np.abs(device - full)
            rows.append([d.max(), d.mean(), tone_error(tile.astype(float), clean),
                         tone_error(full, clean), tone_error(device, clean), *kept])
        r = np.array(rows)
        name = "smooth drift ±18, tint, texture" if harder else "+12 drift (the timed tiles)"
        kept = (f"; texture kept: full-res {r[:, 5].mean():.3f}, device {r[:, 6].mean():.3f}"
                if harder else "")
        print(f"{name}: device vs full-res fix max {r[:, 0].max():.0f}, mean {r[:, 1].mean():.3f}"
              f" grey levels; tone error (8x8 means vs clean) unfixed {r[:, 2].mean():.2f}, "
              f"full-res {r[:, 3].mean():.3f}, device {r[:, 4].mean():.3f}{kept}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quality", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep every run's images alive")
    args = ap.parse_args()
    lr, specs, hrs = job()
    if args.quality:
        return quality(lr, specs, hrs)
    pool = ThreadPoolExecutor(args.threads) if args.threads > 1 else None
    keep: list | None = [] if args.keep else None
    run_once(lr, specs, hrs, pool=pool, keep=keep)  # warm-up
    for name, clock in (("wall", time.perf_counter), ("cpu", time.process_time)):
        runs = [run_once(lr, specs, hrs, clock, pool, keep) for _ in range(args.repeats)]
        fix = statistics.median(r[0] for r in runs)
        stitch = statistics.median(r[1] for r in runs)
        total = statistics.median(r[0] + r[1] for r in runs)
        print(f"{LR * SCALE}² ({len(specs)} tiles, {N_DIFFUSION} colour-fixed, "
              f"{args.threads} thread(s){', kept' if args.keep else ''}), {name} time, "
              f"median of {args.repeats}: colour fix {fix * 1e3:.0f} ms, "
              f"stitch {stitch * 1e3:.0f} ms, total {total * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
