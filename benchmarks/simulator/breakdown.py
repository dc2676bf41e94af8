"""Where a job's time goes: its critical path by stage, per policy and link, on the H200
profile measured by `policies.py` and the costs issue 11 added since (each one a step).

Every input is labelled with where it comes from (`Input.source`): `measured` (by this
project, with the command in benchmarks/RESULTS.md), `issue` (a figure quoted in issue 11, not
measured by this work), `what-if` (an assumption, so the table can show what a change
would buy) or `setting` (a configuration value). The steps are cumulative, one change
each, so the rows read as before/after.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .jobs import STAGES, JobRecord
from .profiles import LINKS, Profile, link_costs
from .scenario import Scenario, percentile, simulate

BREAKDOWN_POLICIES = ("hybrid", "edge-diffusion-all", "split-device", "split-edge",
                      "device-light-all")
# Stages as the table groups them: the link's own time (request, tile bytes, half RTTs) and
# the codecs' (tile encode on the edge, decode on the device) apart; the LR image's encode,
# transfer and decode together as `plan`.
COLUMNS: dict[str, tuple[str, ...]] = {
    "queue": ("queue",), "t2i": ("t2i",), "plan": ("plan",), "diffusion": ("diffusion",),
    "edge_light": ("edge_light",), "device_light": ("device_light",),
    "wire": ("request", "wire"), "codec": ("encode", "decode"), "stitch": ("stitch",),
}
assert {s for group in COLUMNS.values() for s in group} == set(STAGES)

TILE_128 = 128 * 128
X4_STEPS = 20  # the SD x4 upscaler's steps in the measured run
HR_2048 = 2048 * 2048


@dataclass(frozen=True)
class Input:
    name: str
    value: str
    source: str  # measured | issue | what-if | setting


@dataclass(frozen=True)
class Knobs:
    """The parameters of the new-cost steps (defaults: the figures named in issue 11)."""

    stitch_s: float = 0.6  # device stitch + colour fix at 2048² (H200 run, hybrid, lan)
    fast_stitch_s: float = 0.15  # issue 11 item 5's goal: 4x faster
    gpu_light_s_per_tile: float = 0.0009  # compact Real-ESRGAN, 128² LR tile, H200: issue 11
    light_batch: int = 16  # the edge's torch lot on CUDA (server/backends/local.py)
    one_step_steps: int = 1  # UNet steps of the one-step diffusion SR what-if
    x4_vae_s_per_tile: float = 0.025  # x4 upscaler VAE decode, 128² → 512² (NOTES.md, H200)
    img2img_vae_s_per_tile: float = 0.042  # SD VAE decode 512² 21 ms (NOTES.md) + encode


# Tile codecs: `python benchmarks/codecs.py` on the 2-core x86_64 (RESULTS.md, "Tile codecs"):
# bytes/px, encode and decode ms per 512² tile.
CODECS_MEASURED = {"png": (1.717, 66.8, 24.1), "jpeg-q95": (0.323, 1.5, 1.8)}


def codec_table() -> dict[str, tuple[float, float, float]]:
    px = 512 * 512
    return {name: (b, enc / 1000 / px, dec / 1000 / px)
            for name, (b, enc, dec) in CODECS_MEASURED.items()}


def steps(measured: Profile, knobs: Knobs = Knobs(), origin: str = "the measured profile"
          ) -> list[tuple[str, Profile, list[Input]]]:
    """The cumulative steps: (label, profile, the inputs this step adds or changes).
    `origin`: where `measured` comes from, for the inputs table."""
    p = measured
    stitch = replace(p.device, stitch_s_per_hr_px=knobs.stitch_s / HR_2048)
    png = codec_table()["png"]
    as_run = replace(p, name="as-run", device=stitch, codec="png",
                     codecs={"png": (p.bytes_per_px, png[1], png[2])})
    out = [("1 as run", as_run, [
        Input("T2I (1 step), diffusion SR (x4 upscaler, 20 steps, batches of 16), light SR "
              "on 4 CPU threads at the edge and at the device", origin, "measured"),
        Input("PNG bytes per pixel (random-weight tiles)", f"{p.bytes_per_px:.3f}, H200 run",
              "measured"),
        Input("PNG encode (edge) / decode (device), per 512² tile",
              "66.8 / 24.1 ms, codecs.py on the 2-core x86_64 under load (the H200 host's "
              "own: not measured)", "measured"),
        Input("stitch + colour fix at 2048² (`--stitch-s`; the H200 run, hybrid on lan: 0.6 s)",
              f"{knobs.stitch_s:g} s", "measured" if knobs.stitch_s == 0.6 else "what-if"),
    ])]
    codecs = replace(as_run, name="codecs", codecs=codec_table())
    out.append(("2 +codecs", codecs, [
        Input("PNG / JPEG q95 bytes per pixel (photo-like tiles); the planner chooses "
              "(tile_quality=high)", "1.717 / 0.323, codecs.py, 2-core x86_64", "measured"),
        Input("JPEG q95 encode / decode per 512² tile", "1.5 / 1.8 ms, same run", "measured"),
    ]))
    gpu = replace(codecs, name="gpu-light", light_batch=knobs.light_batch,
                  edge=replace(codecs.edge, light_s_per_px=knobs.gpu_light_s_per_tile / TILE_128))
    out.append(("3 +GPU light SR", gpu, [
        Input("edge light SR on the GPU, compact model, per 128² LR tile",
              f"{knobs.gpu_light_s_per_tile * 1000:g} ms (issue 11; not measured by us)",
              "issue"),
        Input("edge light SR lot", f"{knobs.light_batch} tiles (the edge's CUDA default)",
              "setting"),
    ]))
    one = replace(gpu, name="one-step", edge=one_step_edge(gpu, knobs))
    out.append(("4 +one-step SR", one, [
        Input("diffusion SR call (one-step img2img, never measured)",
              f"{knobs.one_step_steps}/{X4_STEPS} of the measured call's UNet part (its x4 "
              f"VAE decode, {knobs.x4_vae_s_per_tile * 1000:g} ms/tile in NOTES.md, taken out) "
              f"+ {knobs.img2img_vae_s_per_tile * 1000:g} ms VAE per tile (SD VAE decode "
              "512² 21 ms in NOTES.md, encode assumed equal)", "what-if"),
    ]))
    fast = replace(one, name="fast-stitch", device=replace(
        one.device, stitch_s_per_hr_px=knobs.fast_stitch_s / HR_2048))
    out.append(("5 +stitch 4x", fast, [
        Input("stitch + colour fix at 2048²",
              f"{knobs.fast_stitch_s:g} s (issue 11 item 5's 4x goal)", "what-if"),
    ]))
    return out


def one_step_edge(p: Profile, knobs: Knobs):
    """Diffusion SR at `one_step_steps` UNet steps instead of the x4 upscaler's 20: the
    measured call's fixed part and per-tile UNet part scaled by steps, its VAE decode
    replaced by img2img's encode + decode."""
    e, k = p.edge, knobs.one_step_steps / X4_STEPS
    per_tile = e.sr_s_per_tile_px * TILE_128
    unet = max(per_tile - knobs.x4_vae_s_per_tile, 0.0)
    return replace(e, sr_batch_base_s=e.sr_batch_base_s * k,
                   sr_s_per_tile_px=(unet * k + knobs.img2img_vae_s_per_tile) / TILE_128)


def breakdown_rows(configs: Sequence[tuple[str, Profile, list[Input]]],
                   links: Iterable[str] = tuple(LINKS),
                   policies: Iterable[str] = BREAKDOWN_POLICIES, devices: int = 1,
                   jobs: int = 4, quality: str = "high") -> list[dict[str, Any]]:
    """One row per (config, link, policy): latency and the mean seconds of each stage of the
    jobs' critical paths (which add up to the mean latency)."""
    rows = []
    for label, profile, _ in configs:
        for link in links:
            for policy in policies:
                scenario = Scenario(f"{label}/{link}", profile, policy, link_costs(link),
                                    devices, jobs, seed=1, tile_quality=quality)
                records = simulate(scenario)
                latencies = [r.latency for r in records]
                row: dict[str, Any] = {
                    "config": label, "link": link, "policy": policy, "devices": devices,
                    "tiles_as": "/".join(sorted({r.codec for r in records})),
                    "latency_s": statistics.fmean(latencies),
                    "p50_s": percentile(latencies, 50),
                    "tiles": "/".join(f"{_mean_count(records, where):g}" for where in (
                        ("edge", "diffusion"), ("edge", "light"), ("device", "light"))),
                }
                for column, stages in COLUMNS.items():
                    row[column] = statistics.fmean(
                        sum(r.stages.get(s, 0.0) for s in stages) for r in records)
                rows.append(row)
    return rows


def _mean_count(records: Sequence[JobRecord], where: tuple[str, str]) -> float:
    return round(statistics.fmean(sum(p == where for p in r.placement) for r in records), 1)


# `tiles`: mean tiles per job to edge diffusion / edge light / device light.
# `latency_s`: the mean, which the stage columns add up to.
TABLE_COLUMNS = ("config", "link", "policy", "tiles_as", "tiles", "p50_s", "latency_s",
                 *COLUMNS)


def inputs_table(configs: Sequence[tuple[str, Profile, list[Input]]]) -> str:
    lines = ["| step | input | value | source |", "|---|---|---|---|"]
    for label, _, inputs in configs:
        lines += [f"| {label} | {i.name} | {i.value} | {i.source} |" for i in inputs]
    return "\n".join(lines)


def plot(rows: Sequence[dict[str, Any]], path: Path, policy: str = "hybrid") -> bool:
    """Stacked bars of `policy`'s critical path, one per (link, config). False: no
    matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [r for r in rows if r["policy"] == policy]
    links = list(dict.fromkeys(r["link"] for r in chosen))
    fig, axes = plt.subplots(1, len(links), figsize=(4.2 * len(links), 4.2), sharey=True,
                             squeeze=False)
    colours = plt.get_cmap("tab10").colors
    for ax, link in zip(axes[0], links, strict=True):
        here = [r for r in chosen if r["link"] == link]
        bottom = [0.0] * len(here)
        for k, column in enumerate(COLUMNS):
            values = [r[column] for r in here]
            ax.bar(range(len(here)), values, bottom=bottom, color=colours[k % 10],
                   label=column)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        ax.set_xticks(range(len(here)), [r["config"] for r in here], rotation=35, ha="right",
                      fontsize=8)
        ax.set_title(f"{policy}, {link}")
        for goal, name in ((0.8, "lan"), (1.2, "wifi")):
            if name == link:
                ax.axhline(goal, color="black", linestyle="--", linewidth=1)
    axes[0][0].set_ylabel("seconds on the critical path (simulated)")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
