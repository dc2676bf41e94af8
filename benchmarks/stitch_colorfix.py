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

    python benchmarks/stitch_colorfix.py [--repeats 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from hybridsr.imaging.compose import as_tile, correct_edge_tile
from hybridsr.imaging.stitch import Stitcher
from hybridsr.imaging.tiles import tile_grid
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


def run_once(lr, specs, hrs, clock=time.perf_counter, pool=None) -> tuple[float, float]:
    run = pool.map if pool is not None else map
    t0 = clock()
    fixes = run(lambda s: correct_edge_tile(lr, s, SCALE, hrs[s.index], "wavelet"), specs)
    fixed = dict(zip([s.index for s in specs], fixes, strict=True))
    t1 = clock()
    st = Stitcher(LR, LR, SCALE, [as_tile(s) for s in specs])
    list(run(lambda s: st.add(s.index, fixed[s.index]), specs))
    st.result()
    return t1 - t0, clock() - t1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    lr, specs, hrs = job()
    pool = ThreadPoolExecutor(args.threads) if args.threads > 1 else None
    run_once(lr, specs, hrs, pool=pool)  # warm-up
    for name, clock in (("wall", time.perf_counter), ("cpu", time.process_time)):
        runs = [run_once(lr, specs, hrs, clock, pool) for _ in range(args.repeats)]
        fix = statistics.median(r[0] for r in runs)
        stitch = statistics.median(r[1] for r in runs)
        total = statistics.median(r[0] + r[1] for r in runs)
        print(f"{LR * SCALE}² ({len(specs)} tiles, {N_DIFFUSION} colour-fixed, "
              f"{args.threads} thread(s)), {name} time, "
              f"median of {args.repeats}: colour fix {fix * 1e3:.0f} ms, "
              f"stitch {stitch * 1e3:.0f} ms, total {total * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
