"""Why hybrid trails heavy-SR-everywhere on SSIM and on the seam score, offline.

    python benchmarks/seam_diag.py             # 3 photos at 384², about 3 min on 2 loaded cores

Rebuilds the plans `benchmarks/quality.py` measures end to end without a network (salient
tiles, score >= `--threshold`: Real-ESRGAN x4plus on each tile's `gansr.CONTEXT` window and
the wavelet colour fix; the rest: the compact model over rectangles of adjacent tiles, as
the device runs it; the feathered stitch), lossless, so one part can be swapped at a time:

- `tiles`: the product; `perfect`: each heavy tile cut from whole-image x4plus instead (then
  colour-fixed alike): what this plan scores if tiling cost nothing;
- `whole16`: whole-image x4plus with 16 px of mirror at the image border instead of the
  floor's 10, colour-fixed per tile and stitched alike: no tile is run, so its seam_rel is
  how far the measure moves for reasons that have nothing to do with tiles;
- seams per kind of border: each border pixel's step is classed by the tiles on its two
  sides, heavy-heavy (HH), heavy-light (HL), light-light (LL), and scored against the other
  lines of the same LR-grid phase in that class, minus the same for the plan drawn from
  whole-image outputs (`quality.untiled`): > 0, the tiles step more there than the models do;
- per tile, x4plus's SSIM gain over the compact model (both as the product draws them),
  against the tile's saliency rank: what the plan's choice of heavy tiles is worth on SSIM.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from quality import downscale, photo, seam_score, untiled  # noqa: E402
from skimage.metrics import peak_signal_noise_ratio, structural_similarity  # noqa: E402

from hybridsr.imaging.compose import (  # noqa: E402
    as_tile,
    correct_edge_tile,
    device_regions,
    plan_tiles,
    upscale_region,
)
from hybridsr.imaging.lightsr import create_backend  # noqa: E402
from hybridsr.imaging.realesrgan import RealESRGAN  # noqa: E402
from hybridsr.imaging.saliency import tile_scores  # noqa: E402
from hybridsr.imaging.stitch import Stitcher  # noqa: E402
from hybridsr.imaging.tiles import context_window, tile_grid  # noqa: E402
from hybridsr.protocol import Plan, TileSpec  # noqa: E402
from hybridsr.server.gansr import CONTEXT  # noqa: E402

CLASSES = ("HH", "HL", "LL")
SCALE = 4


def make_plan(lr: np.ndarray, threshold: float, tile: int = 32, overlap: int = 8) -> Plan:
    """The edge's tiling (EdgeConfig defaults), heavy where the score reaches `threshold`."""
    h, w = lr.shape[:2]
    tiles = tile_grid(w, h, tile, overlap)
    specs = [TileSpec(index=t.index, x=t.x, y=t.y, w=t.w, h=t.h, score=sc,
                      destination="edge" if sc >= threshold else "device",
                      method="diffusion" if sc >= threshold else "light")
             for t, sc in zip(tiles, tile_scores(lr, tiles), strict=True)]
    return Plan(job_id="diag", policy="hybrid", lr_image=None, lr_width=w, lr_height=h,
                scale=SCALE, steps=1, tile=tile, overlap=overlap, threshold=threshold,
                tiles=specs, sr_backend="realesrgan", random_weights=False)


def render(lr: np.ndarray, plan: Plan, heavy: dict[int, np.ndarray], device) -> np.ndarray:
    """The device's composition (sdk/job.py): heavy tiles colour-fixed, light by regions."""
    stitcher = Stitcher(plan.lr_width, plan.lr_height, plan.scale, plan_tiles(plan))
    for spec in plan.tiles:
        if spec.method == "diffusion":
            stitcher.add(spec.index, correct_edge_tile(lr, spec, plan.scale, heavy[spec.index]))
    for region in device_regions([t for t in plan.tiles if t.method != "diffusion"]):
        for index, hr in upscale_region(lr, region, plan.scale, device).items():
            stitcher.add(index, hr)
    return stitcher.result()


def cut(image: np.ndarray, plan: Plan) -> dict[int, np.ndarray]:
    s = plan.scale
    return {t.index: np.ascontiguousarray(image[t.y * s : (t.y + t.h) * s,
                                                t.x * s : (t.x + t.w) * s])
            for t in plan.tiles}


def border_classes(image: np.ndarray, plan: Plan) -> dict[str, tuple[float, float]]:
    """Per class: mean step at border pixels minus at the other pixels of LR-grid lines."""
    s, lw, lh = plan.scale, plan.lr_width, plan.lr_height
    heavy, light = np.zeros((lh, lw), bool), np.zeros((lh, lw), bool)
    for t in plan.tiles:
        (heavy if t.method == "diffusion" else light)[t.y : t.y + t.h, t.x : t.x + t.w] = True
    luma = np.asarray(image, dtype=np.float64) @ [0.299, 0.587, 0.114]
    sums = {c: np.zeros(4) for c in CLASSES}  # border sum, count, other sum, count
    for axis in (1, 0):
        lum, hv, lt = (luma, heavy, light) if axis == 1 else (luma.T, heavy.T, light.T)
        lines = ({t.x for t in plan.tiles} | {t.x + t.w for t in plan.tiles}) if axis == 1 \
            else ({t.y for t in plan.tiles} | {t.y + t.h for t in plan.tiles})
        for c in range(1, hv.shape[1]):  # the LR line between LR columns c - 1 and c
            step = np.abs(lum[:, c * s] - lum[:, c * s - 1])
            a = np.repeat(hv[:, c - 1 : c + 1], s, 0)
            b = np.repeat(lt[:, c - 1 : c + 1], s, 0)
            cls = np.where(a.all(1) & ~b.any(1), 0, np.where(b.all(1) & ~a.any(1), 2, 1))
            k = 0 if c in lines else 2
            for i, name in enumerate(CLASSES):
                sel = cls == i
                sums[name][k] += step[sel].sum()
                sums[name][k + 1] += sel.sum()
    return {name: (v[0] / v[1] - v[2] / v[3]) if v[1] and v[3] else float("nan")
            for name, v in sums.items()}


def scores(hr: np.ndarray, out: np.ndarray, plan: Plan, floor: np.ndarray) -> dict:
    mine, base = border_classes(out, plan), border_classes(floor, plan)
    row = {"psnr": peak_signal_noise_ratio(hr, out, data_range=255),
           "ssim": structural_similarity(hr, out, channel_axis=-1, data_range=255),
           "seam_rel": seam_score(out, plan) - seam_score(floor, plan)}
    row.update({name: mine[name] - base[name] for name in CLASSES})
    return row


def tile_gains(hr: np.ndarray, heavy: np.ndarray, light: np.ndarray, plan: Plan
               ) -> list[tuple[float, float]]:
    """(score, x4plus's mean SSIM minus the compact model's) per tile, most salient first."""
    _, a = structural_similarity(hr, heavy, channel_axis=-1, data_range=255, full=True)
    _, b = structural_similarity(hr, light, channel_axis=-1, data_range=255, full=True)
    gain = (a - b).mean(axis=-1)
    s = plan.scale
    out = [(t.score, float(gain[t.y * s : (t.y + t.h) * s, t.x * s : (t.x + t.w) * s].mean()))
           for t in plan.tiles]
    return sorted(out, reverse=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", nargs="+", default=["astronaut", "coffee", "chelsea"])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    tile_model = RealESRGAN("realesrgan-x4plus", scale=4, threads=args.threads, tile=0,
                            tile_pad=0)  # as server/gansr.py runs it
    whole10 = RealESRGAN("realesrgan-x4plus", scale=4, threads=args.threads, tile=0)
    whole16 = RealESRGAN("realesrgan-x4plus", scale=4, threads=args.threads, tile=0,
                         tile_pad=CONTEXT)
    device = create_backend("realesr-animevideov3", args.threads)
    rows: dict[str, list[dict]] = {}
    gains: list[tuple[float, float, bool]] = []
    for name in args.photos:
        hr = photo(name, args.size)
        lr = downscale(hr)
        whole = {"heavy": whole10.upscale(lr), "light": device.upscale(lr, SCALE)}
        every = make_plan(lr, -1.0)
        tiled = {}
        for spec in every.tiles:  # each heavy tile as the edge runs it
            big = tile_model.upscale(np.ascontiguousarray(
                context_window(lr, as_tile(spec), CONTEXT)))
            c = CONTEXT * SCALE
            tiled[spec.index] = big[c : c + spec.h * SCALE, c : c + spec.w * SCALE]
        mirror16 = cut(whole16.upscale(lr), every)
        for label, plan in (("hybrid", make_plan(lr, args.threshold)), ("heavy-all", every)):
            floor = untiled(plan, whole)
            for variant, heavy in (("tiles", tiled), ("perfect", cut(whole["heavy"], plan)),
                                   ("whole16", mirror16)):
                row = scores(hr, render(lr, plan, heavy, device), plan, floor)
                rows.setdefault(f"{label} {variant}", []).append(row)
                print(f"{name:10s} {label:9s} {variant:8s} PSNR {row['psnr']:6.2f} SSIM "
                      f"{row['ssim']:.4f} seam_rel {row['seam_rel']:+.3f} HH {row['HH']:+.3f}"
                      f" HL {row['HL']:+.3f} LL {row['LL']:+.3f}", file=sys.stderr)
        light_all = render(lr, make_plan(lr, 2.0), {}, device)  # no score reaches 2
        per_tile = tile_gains(hr, render(lr, every, tiled, device), light_all, every)
        gains += [(score, gain, score >= args.threshold) for score, gain in per_tile]
        print(f"{name:10s} x4plus SSIM gain per tile, most salient first: "
              + " ".join(f"{s:.2f}:{g:+.3f}" for s, g in per_tile), file=sys.stderr)
    print("\nMeans over the photos (lossless; seam classes: border excess minus the floor's):")
    for label, group in rows.items():
        m = {k: statistics.fmean(r[k] for r in group if not np.isnan(r[k]))
             if any(not np.isnan(r[k]) for r in group) else float("nan")
             for k in ("psnr", "ssim", "seam_rel", *CLASSES)}
        print(f"  {label:18s} PSNR {m['psnr']:6.2f} SSIM {m['ssim']:.4f} seam_rel "
              f"{m['seam_rel']:+.3f}  HH {m['HH']:+.3f} HL {m['HL']:+.3f} LL {m['LL']:+.3f}")
    chosen = [g for _, g, c in gains if c]
    left = [g for _, g, c in gains if not c]
    print(f"x4plus SSIM gain over compact, per tile: on the {len(chosen)} tiles the plan sends "
          f"heavy {statistics.fmean(chosen):+.4f}, on the {len(left)} it leaves light "
          f"{statistics.fmean(left):+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
