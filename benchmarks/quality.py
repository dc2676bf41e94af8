"""Quality against ground truth on real photos, every policy, on the `realesrgan` preset.

    python benchmarks/quality.py --quick                 # about 2-3 min on 2 CPU cores
    python benchmarks/quality.py --write                 # the RESULTS.md table (3 photos)
    python benchmarks/quality.py --threshold 0.4 --policies hybrid   # another saliency threshold

scikit-image's photographs (cropped to `--size`) are downscaled x4 (Pillow bicubic with
antialiasing) and enhanced back through a real localhost edge (Real-ESRGAN x4plus for heavy
tiles, the compact model for light SR) and a real client (the compact model on the device).
Per photo and policy: PSNR and SSIM of the result against the original; `lr_psnr`, the
LR-consistency (result box-downscaled x4 against the LR input, dB); `seam`, the mean luma
step across the HR lines where a tile starts or ends minus the mean step across the other
lines at the same phase of the LR grid, and `seam_rel`, that minus the same score of the
same plan rendered without tiles: each tile cut from its model's whole-image output (x4plus
for heavy tiles, the compact model for the rest) and stitched alike, which is what the
content, as those models draw it, gives at those lines (≤ 0: the tile borders step no more
than that). `seam_vs_light` is the earlier floor, `device-light-all`'s score: it charges
x4plus's own texture at those lines as seams (whole-image x4plus, seamless by construction,
scored +0.99 on astronaut against it). Last, the client's latency
(request sent → final image). The goals of issue 12 are checked on the means over the
photos. These GAN models score below bicubic on PSNR and the compact model can outscore
x4plus: policies are compared with each other, not with bicubic.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from policies import _border_excess
from policies import quality as proxies
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from hybridsr.imaging.compose import plan_tiles
from hybridsr.imaging.lightsr import create_backend
from hybridsr.imaging.realesrgan import RealESRGAN
from hybridsr.imaging.stitch import Stitcher
from hybridsr.protocol import Plan
from hybridsr.sdk import AsyncHybridClient
from hybridsr.server import BackgroundEdge, EdgeConfig

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
POLICIES = ("hybrid", "edge-diffusion-all", "device-light-all", "split-device", "split-edge",
            "edge-light-all")
HEAVY, LIGHT = "edge-diffusion-all", "device-light-all"
RESULTS = Path(__file__).with_name("RESULTS.md")
BEGIN, END = "<!-- quality.py: begin -->", "<!-- quality.py: end -->"


def photo(name: str, size: int) -> np.ndarray:
    """A centred `size` square of a scikit-image photo (RGB uint8)."""
    img = np.asarray(getattr(data, name)())[..., :3]
    h, w = img.shape[:2]
    side = min(size, h, w) // 4 * 4
    y, x = (h - side) // 2, (w - side) // 2
    return np.ascontiguousarray(img[y : y + side, x : x + side])


def seam_score(image: np.ndarray, plan: Plan) -> float:
    """Like `policies.quality`'s seam, but against lines at the same phase of the LR grid.

    A real SR model's output steps more at LR pixel boundaries (every `scale` HR lines) than
    inside LR pixels, and tile borders are such boundaries: compared with every other line,
    a seamless whole-image result scored +0.9 on astronaut; compared like with like, +0.1.
    """
    s = plan.scale
    luma = np.asarray(image, dtype=np.float64) @ [0.299, 0.587, 0.114]
    parts = []
    for axis, starts in ((1, [(t.x, t.w) for t in plan.tiles]),
                         (0, [(t.y, t.h) for t in plan.tiles])):
        steps = np.abs(np.diff(luma, axis=axis)).mean(axis=1 - axis)
        on_grid = np.zeros(len(steps), bool)
        on_grid[s - 1 :: s] = True  # steps[c - 1] is the step into line c; c a multiple of s
        borders = {a * s for a, _ in starts} | {(a + n) * s for a, n in starts}
        value = _border_excess(steps[on_grid], {c // s for c in borders})
        if value is not None:
            parts.append(value)
    return float(statistics.fmean(parts)) if parts else float("nan")


def untiled(plan: Plan, whole: dict[str, np.ndarray]) -> np.ndarray:
    """The plan drawn without tiles: each tile cut from its model's whole-image output."""
    s = plan.scale
    stitcher = Stitcher(plan.lr_width, plan.lr_height, s, plan_tiles(plan))
    for t in plan.tiles:
        image = whole["heavy" if t.method == "diffusion" else "light"]
        stitcher.add(t.index, image[t.y * s : (t.y + t.h) * s, t.x * s : (t.x + t.w) * s])
    return stitcher.result()


def downscale(hr: np.ndarray, scale: int = 4) -> np.ndarray:
    h, w = hr.shape[:2]
    small = Image.fromarray(hr).resize((w // scale, h // scale), Image.Resampling.BICUBIC)
    return np.asarray(small)


async def run(args: argparse.Namespace) -> list[dict]:
    config = EdgeConfig(port=0, preset="realesrgan", rate_per_s=0, torch_threads=args.threads,
                        light_threads=args.threads)
    if args.threshold is not None:  # the edge's default otherwise
        config.threshold = args.threshold
    rows = []
    heavy = RealESRGAN("realesrgan-x4plus", scale=4, threads=args.threads, tile=0)
    with BackgroundEdge(config) as edge:
        device = create_backend("realesr-animevideov3", args.threads)
        async with AsyncHybridClient(edge.url, device_sr=device) as client:
            for name in args.photos:
                hr = photo(name, args.size)
                lr = downscale(hr)
                whole = {"heavy": heavy.upscale(lr), "light": device.upscale(lr, 4)}
                for policy in args.policies:
                    latencies, results = [], []
                    for _ in range(args.repeats):  # the pictures of the first run are scored
                        t0 = time.perf_counter()
                        results.append(await client.enhance(lr, scale=4, policy=policy))
                        latencies.append(time.perf_counter() - t0)
                    result = results[0]
                    latency = statistics.median(latencies)
                    out = np.asarray(result.image.convert("RGB"))
                    methods = [(t.destination, t.method) for t in result.plan.tiles]
                    row = {
                        "photo": name, "policy": policy, "size": hr.shape[1],
                        "psnr": peak_signal_noise_ratio(hr, out, data_range=255),
                        "ssim": structural_similarity(hr, out, channel_axis=-1,
                                                      data_range=255),
                        "latency_s": latency, "degraded": result.degraded,
                        "heavy": sum(m == ("edge", "diffusion") for m in methods),
                        "edge_light": sum(m == ("edge", "light") for m in methods),
                        "device": sum(m[0] == "device" for m in methods),
                        "lr_psnr_db": proxies(result)["lr_psnr_db"],
                        "seam": seam_score(out, result.plan),
                        "seam_floor": seam_score(untiled(result.plan, whole), result.plan),
                    }
                    rows.append(row)
                    print(f"{name:10s} {policy:18s} PSNR {row['psnr']:6.2f} SSIM "
                          f"{row['ssim']:.4f} lr_psnr {row['lr_psnr_db']:6.2f} seam "
                          f"{row['seam']:+.3f} {latency:6.2f}s tiles "
                          f"{row['heavy']}/{row['edge_light']}/{row['device']}",
                          file=sys.stderr)
    return rows


def summarise(rows: list[dict], policies: list[str]) -> dict[str, dict]:
    """Means over the photos, per policy."""
    light = {r["photo"]: r["seam"] for r in rows if r["policy"] == LIGHT}
    for r in rows:
        r["seam_rel"] = r["seam"] - r["seam_floor"]
        r["seam_vs_light"] = r["seam"] - light[r["photo"]]
    out = {}
    for policy in policies:
        mine = [r for r in rows if r["policy"] == policy]
        out[policy] = {k: statistics.fmean(r[k] for r in mine)
                       for k in ("psnr", "ssim", "lr_psnr_db", "seam", "seam_rel",
                                 "seam_vs_light", "latency_s", "heavy", "edge_light", "device")}
    return out


def goals(summary: dict[str, dict]) -> list[tuple[str, bool, str]]:
    h, heavy, light = summary["hybrid"], summary[HEAVY], summary[LIGHT]
    best_psnr = max(heavy["psnr"], light["psnr"])
    best_ssim = max(heavy["ssim"], light["ssim"])
    ratio = h["latency_s"] / heavy["latency_s"]
    return [
        ("PSNR within 0.3 dB of the better of heavy-all and light-all",
         h["psnr"] >= best_psnr - 0.3, f"{h['psnr']:.2f} vs {best_psnr:.2f} dB"),
        ("SSIM within 0.01 of the better of heavy-all and light-all",
         h["ssim"] >= best_ssim - 0.01, f"{h['ssim']:.4f} vs {best_ssim:.4f}"),
        ("seam score ≤ 0 (relative to the same plan drawn without tiles)",
         h["seam_rel"] <= 0, f"{h['seam_rel']:+.3f}; raw {h['seam']:+.3f}, against "
         f"light-everywhere {h['seam_vs_light']:+.3f}"),
        ("latency ≤ 0.6x heavy-everywhere", ratio <= 0.6,
         f"{h['latency_s']:.2f} s / {heavy['latency_s']:.2f} s = {ratio:.2f}x"),
    ]


def table(rows: list[dict], summary: dict[str, dict], checks: list, command: str,
          wall: float, args: argparse.Namespace) -> str:
    photos = sorted({(r["photo"], r["size"]) for r in rows}, key=lambda p: rows.index(
        next(r for r in rows if r["photo"] == p[0])))
    lines = [
        f"Command: `{command}` — {wall:.0f} s wall. Machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, shared with other jobs; Python {platform.python_version()}."
        f" Photos (scikit-image, centred square crops, downscaled x4 bicubic): "
        + ", ".join(f"{n} {s}²" for n, s in photos) + ".",
        "",
        f"Means over the photos; latency: median of {args.repeats} run(s) each (on a shared,"
        " loaded host latencies are noisy)."
        " Tiles: heavy (edge x4plus) / edge light / device light.",
        "",
        "| policy | PSNR dB | SSIM | LR-consistency dB | seam | seam_rel | seam_vs_light |"
        " latency s | tiles |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for policy, s in summary.items():
        lines.append(f"| {policy} | {s['psnr']:.2f} | {s['ssim']:.4f} | {s['lr_psnr_db']:.2f} |"
                     f" {s['seam']:+.3f} | {s['seam_rel']:+.3f} | {s['seam_vs_light']:+.3f} |"
                     f" {s['latency_s']:.2f} |"
                     f" {s['heavy']:.1f} / {s['edge_light']:.1f} / {s['device']:.1f} |")
    lines += ["", "Goals (hybrid):", ""]
    lines += [f"- {'MET' if ok else 'NOT MET'}: {text} ({detail})" for text, ok, detail in checks]
    return "\n".join(lines)


def write_results(text: str) -> None:
    body = RESULTS.read_text()
    section = (f"{BEGIN}\n## Quality on real photos (`realesrgan` preset)\n\n{text}\n{END}")
    if BEGIN in body:
        start, end = body.index(BEGIN), body.index(END) + len(END)
        body = body[:start] + section + body[end:]
    else:
        body = body.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 photos, 256² (a few minutes)")
    parser.add_argument("--photos", nargs="+", choices=PHOTOS)
    parser.add_argument("--size", type=int, help="HR crop side (default 384; quick 192)")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES))
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for each of edge and device (they share this host)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per photo and policy; the latency is their median")
    parser.add_argument("--threshold", type=float,
                        help="the edge's saliency threshold (default: EdgeConfig's)")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    args.photos = args.photos or (["astronaut", "coffee"] if args.quick else list(PHOTOS[:3]))
    args.size = args.size or (256 if args.quick else 384)
    for needed in ("hybrid", HEAVY, LIGHT):
        if needed not in args.policies:
            args.policies.append(needed)
    started = time.perf_counter()
    rows = asyncio.run(run(args))
    summary = summarise(rows, args.policies)
    checks = goals(summary)
    command = "python benchmarks/" + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    text = table(rows, summary, checks, command, time.perf_counter() - started, args)
    print(text)
    if args.write:
        write_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
