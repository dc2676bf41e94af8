"""What policies.py makes of its runs: summaries, the measured profile, the simulator's check
against the real runs, and the plot."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import simulate as sim

from hybridsr.server.costs import DeviceCosts, EdgeCosts, LinkCosts


def summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per (scenario, policy): medians, p95 and the prediction errors."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["scenario"], r["policy"]), []).append(r)
    out = []
    for (scenario, policy), rs in groups.items():
        def med(key: str, rs: list[dict[str, Any]] = rs) -> float:
            values = [r[key] for r in rs if r.get(key) is not None]
            return round(statistics.median(values), 4) if values else math.nan

        def timing(key: str, rs: list[dict[str, Any]] = rs) -> float:
            return round(statistics.median(r["timings"][key] for r in rs), 3)

        lat = [r["latency_s"] for r in rs]
        out.append({
            "scenario": scenario, "policy": policy, "n": len(rs),
            "p50_s": round(sim.percentile(lat, 50), 3), "p95_s": round(sim.percentile(lat, 95), 3),
            "t2i": timing("t2i"), "edge_sr": timing("edge_sr"), "device_sr": timing("device_sr"),
            "transfer": timing("transfer"), "stitch": timing("stitch"),
            "kB_down": round(med("bytes_received") / 1000, 1), "edge_busy_s": med("edge_busy_s"),
            "pred_s": med("predicted_s"), "meas_edge_s": med("measured_edge_s"),
            "err_edge": round(statistics.fmean(rel_err(r["predicted_s"], r["measured_edge_s"])
                                               for r in rs), 3),
            "pred_total_s": med("predicted_total_s"),
            "err_total": round(statistics.fmean(rel_err(r["predicted_total_s"], r["latency_s"])
                                                for r in rs), 3),
            "salient_enh": med("salient_enhanced"), "lr_psnr": med("lr_psnr_db"),
            "seam": med("seam"),
        })
    return out


def rel_err(predicted: float, measured: float) -> float:
    """Signed relative error of a prediction: (predicted − measured) / measured."""
    return (predicted - measured) / measured if measured > 0 else math.nan


REAL_COLUMNS = ("scenario", "policy", "n", "p50_s", "p95_s", "t2i", "edge_sr", "device_sr",
                "transfer", "stitch", "kB_down", "edge_busy_s", "pred_s", "meas_edge_s",
                "err_edge", "pred_total_s", "err_total", "salient_enh", "lr_psnr", "seam")


def measured_profile(rows: Sequence[dict[str, Any]], measured: dict[str, Any], size: int
                     ) -> sim.Profile:
    """This machine's profile: the edge's own cost model after the runs, the device's
    measured light-SR speed (client stats), the observed foreground share."""
    speeds = [r["client_stats"]["device_sr_s_per_lr_px"] for r in rows
              if r.get("client_stats") and r["client_stats"].get("device_sr_s_per_lr_px")]
    device = DeviceCosts(sr_s_per_px=statistics.median(speeds)) if speeds else DeviceCosts()
    fg = [sum(s >= r["threshold"] for s in r["scores"]) / len(r["scores"]) for r in rows
          if r["policy"] == "hybrid"]
    scale = max(measured["scales"])
    name = f"measured-{measured.get('edge_device', 'cpu').split()[0]}"  # measured-cuda
    return sim.Profile(name, EdgeCosts(**measured["edge_costs"]), device,
                       size // scale, size // scale, scale=scale, steps=measured["steps"],
                       tile=measured["tile"], overlap=measured["overlap"],
                       sr_batch=measured["sr_batch"], threshold=rows[0]["threshold"],
                       fg_share=round(statistics.fmean(fg), 3) if fg else 0.3,
                       bytes_per_px=measured["bytes_per_px"],
                       source="measured by benchmarks/policies.py, edge on "
                              f"{measured.get('edge_device', 'cpu')}",
                       light_batch=measured.get("light_batch", 1),
                       codecs=measured.get("codecs"))


def check_simulator(rows: Sequence[dict[str, Any]], profile: sim.Profile
                    ) -> list[dict[str, Any]]:
    """Replay every real run as a one-job scenario (same link, same tile scores)."""
    out = []
    for r in rows:
        if r["policy"] not in sim.SIM_POLICIES:
            continue
        down, up, rtt_ms = sim.LINKS[r["scenario"].split("/")[1]]
        link = LinkCosts(rtt_ms / 1000, down * 125_000, up * 125_000)
        scenario = sim.Scenario(f"check/{r['scenario']}", profile, r["policy"], link,
                                jobs_per_device=1, scores=(tuple(r["scores"]),))
        simulated = sim.run(scenario)["latency_s"]
        out.append({"scenario": r["scenario"], "policy": r["policy"], "prompt": r["prompt"],
                    "seed": r["seed"], "latency_s": r["latency_s"], "sim_s": simulated,
                    "error": round(rel_err(simulated, r["latency_s"]), 4)})
    return out


def plot(path: Path, real: Sequence[dict[str, Any]], sim_rows: Sequence[dict[str, Any]]
         ) -> None:
    """Three panels: real p50 by link and policy, predicted vs measured, simulated load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(18, 5))
    scenarios = sorted({r["scenario"] for r in real})
    policies = list(dict.fromkeys(r["policy"] for r in real))
    width = 0.8 / max(1, len(policies))
    for i, policy in enumerate(policies):
        ys = [next((r["p50_s"] for r in real if r["scenario"] == s and r["policy"] == policy),
                   0) for s in scenarios]
        axes[0].bar(np.arange(len(scenarios)) + i * width, ys, width, label=policy)
    axes[0].set_xticks(np.arange(len(scenarios)) + 0.4 - width / 2, scenarios)
    axes[0].set_ylabel("p50 latency (s)")
    axes[0].set_title("real runs (localhost, emulated links)")
    axes[0].legend(fontsize=7)
    for key, label in (("meas_edge_s", "plan.predicted_s"), ("p50_s", "predicted total")):
        pred = "pred_s" if key == "meas_edge_s" else "pred_total_s"
        axes[1].scatter([r[key] for r in real], [r[pred] for r in real], label=label, s=14)
    top = max([r["p50_s"] for r in real] + [1e-3])
    axes[1].plot([0, top], [0, top], "k--", lw=0.8)
    axes[1].set_xlabel("measured (s, median)")
    axes[1].set_ylabel("predicted (s, median)")
    axes[1].set_title("planner prediction vs measurement")
    axes[1].legend(fontsize=7)
    plain = [r for r in sim_rows if r.get("kind") != "capacity" and r["device_speed"] == 1.0
             and "/wifi/" in r["scenario"]]
    for profile in dict.fromkeys(r["profile"] for r in plain):
        for policy in ("hybrid", *sim.FIXED):
            pts = sorted((r["devices"], r["p95_s"]) for r in plain
                         if r["profile"] == profile and r["policy"] == policy)
            if pts:
                axes[2].plot(*zip(*pts, strict=True), marker="o", label=f"{profile} {policy}")
    axes[2].set_xlabel("concurrent devices")
    axes[2].set_ylabel("p95 latency (s)")
    axes[2].set_yscale("log")
    axes[2].set_title("simulator: wifi, device speed 1")
    if plain:
        axes[2].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
