"""The sweep (device speed × devices × link × policy), capacity at equal p95, the goals,
and Markdown tables."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from .profiles import LINKS, Profile, link_costs
from .scenario import Scenario, run

FIXED = ("edge-diffusion-all", "split-device", "split-edge")  # same quality constraint
SIM_POLICIES = ("hybrid", *FIXED, "device-light-all")


def sweep(profile: Profile, speeds: Iterable[float] = (0.25, 1.0, 4.0),
          devices: Iterable[int] = (1, 2, 4, 8), links: Iterable[str] = tuple(LINKS),
          policies: Iterable[str] = SIM_POLICIES, jobs_per_device: int = 6,
          capacity: bool = True) -> list[dict[str, Any]]:
    """Device speed × concurrent devices × link, every policy; plus capacity at equal p95."""
    rows = []
    for speed in speeds:
        for link in links:
            for n in devices:
                for policy in policies:
                    name = f"{profile.name}/{link}/speed{speed:g}/dev{n}"
                    rows.append(run(Scenario(name, profile, policy, link_costs(link), n,
                                             jobs_per_device, speed)))
            if capacity:
                rows += capacity_rows(profile, speed, link, jobs_per_device)
    return rows


def capacity_rows(profile: Profile, speed: float, link: str, jobs_per_device: int,
                  reference_devices: int = 8, most_devices: int = 64) -> list[dict[str, Any]]:
    """The most jobs/min each policy sustains with p95 no worse than edge-diffusion-all's p95
    at `reference_devices` devices: more devices join until p95 passes that bound."""
    name = f"{profile.name}/{link}/speed{speed:g}/capacity"
    ref = run(Scenario(name, profile, "edge-diffusion-all", link_costs(link),
                       reference_devices, jobs_per_device, speed))
    rows = []
    for policy in ("hybrid", *FIXED):
        best: dict[str, Any] | None = None
        n = reference_devices
        while n <= most_devices:
            row = run(Scenario(name, profile, policy, link_costs(link), n, jobs_per_device,
                               speed))
            if row["p95_s"] > ref["p95_s"] * 1.0001:
                break
            best = row
            n = n + max(2, n // 4)
        rows.append({"scenario": name, "policy": policy, "kind": "capacity",
                     "latency_s": best["latency_s"] if best else math.nan,
                     "p95_s": best["p95_s"] if best else math.nan,
                     "p95_bound_s": ref["p95_s"], "devices": best["devices"] if best else 0,
                     "jobs_per_min": best["jobs_per_min"] if best else 0.0,
                     "reference_jobs_per_min": ref["jobs_per_min"],
                     "capacity_ratio": round((best["jobs_per_min"] if best else 0.0)
                                             / ref["jobs_per_min"], 3),
                     "hit_device_cap": bool(best and n > most_devices)})
    return rows


def goals(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals 8a–8c over simulated rows (goal 8d needs real runs: policies.py)."""
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        if r.get("kind") != "capacity":
            by.setdefault(r["scenario"], {})[r["policy"]] = r
    near, near_fail, half, half_fail = 0, [], 0, []
    for name, pol in sorted(by.items()):
        if "hybrid" not in pol or not all(f in pol for f in FIXED):
            continue
        h = pol["hybrid"]
        best = min(pol[f]["latency_s"] for f in FIXED)
        near += 1
        if h["latency_s"] > 1.05 * best:
            near_fail.append({"scenario": name, "hybrid_s": h["latency_s"], "best_fixed_s": best,
                              "ratio": round(h["latency_s"] / best, 3)})
        if h["devices"] >= 4 or h["diffusion_to_light"] >= 5:
            half += 1
            ratio = h["latency_s"] / pol["edge-diffusion-all"]["latency_s"]
            if ratio > 0.5 or not h["fg_diffused"]:
                half_fail.append({"scenario": name, "ratio": round(ratio, 3),
                                  "fg_diffused": h["fg_diffused"]})
    cap = [r for r in rows if r.get("kind") == "capacity" and r["policy"] == "hybrid"]
    cap_fail = [{"scenario": r["scenario"], "capacity_ratio": r["capacity_ratio"]}
                for r in cap if r["capacity_ratio"] < 2]
    return {
        "within_5pct_of_best_fixed": {"scenarios": near, "failed": near_fail,
                                      "met": near > 0 and not near_fail},
        "half_of_edge_diffusion_all": {"scenarios": half, "failed": half_fail,
                                       "met": half > 0 and not half_fail},
        "capacity_2x_at_equal_p95": {"scenarios": len(cap), "failed": cap_fail,
                                     "met": bool(cap) and not cap_fail,
                                     "min_ratio": min((r["capacity_ratio"] for r in cap),
                                                      default=math.nan)},
    }


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of `columns` over `rows` (floats to 3 significant decimals)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


SIM_COLUMNS = ("scenario", "policy", "latency_s", "p95_s", "jobs_per_min", "edge_busy_s",
               "bytes_down", "prediction_error", "diffusion_share", "edge_light_share")
CAPACITY_COLUMNS = ("scenario", "policy", "devices", "p95_s", "p95_bound_s", "jobs_per_min",
                    "reference_jobs_per_min", "capacity_ratio")


def hybrid_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per scenario: hybrid vs each fixed policy (mean latency ratios)."""
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        if r.get("kind") != "capacity":
            by.setdefault(r["scenario"], {})[r["policy"]] = r
    out = []
    for name, pol in by.items():
        if "hybrid" not in pol or not all(f in pol for f in FIXED):
            continue
        h = pol["hybrid"]["latency_s"]
        out.append({"scenario": name, "hybrid_s": h,
                    **{f"/{f}": round(h / pol[f]["latency_s"], 3) for f in FIXED},
                    "pred_err": pol["hybrid"]["prediction_error"],
                    "diff:light": pol["hybrid"]["diffusion_to_light"]})
    return out

