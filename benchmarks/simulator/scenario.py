"""One scenario (profile, policy, link, devices) run to the end, and its summary row."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hybridsr.server.costs import LinkCosts
from hybridsr.server.planner import EDGE_DIFFUSION, EDGE_LIGHT, Costs

from .engine import Edge, Sim
from .jobs import Device, JobRecord, tile_scores
from .profiles import Profile


@dataclass(frozen=True)
class Scenario:
    """What to simulate: a profile, one policy for every device, a link, how many devices
    and jobs, and how the real edge may differ from the planner's belief."""

    name: str
    profile: Profile
    policy: str
    link: LinkCosts = field(default_factory=LinkCosts)
    devices: int = 1
    jobs_per_device: int = 4
    device_speed: float = 1.0  # × the profile's device speed
    think_s: float = 0.0
    seed: int = 0
    truth: Costs | None = None  # the real costs, where the planner's belief differs
    scores: tuple[tuple[float, ...], ...] | None = None  # fixed per-job scores, cycled
    replicas: int = 1  # copies of the edge's workers, each call to the least-loaded one
    batching: bool = False  # cross-job batching of diffusion-SR tiles
    batch_wait_s: float = 0.0  # how long a call may wait to fill (with batching)
    tile_quality: str = "high"  # lossy tiles allowed? (only where the profile has `codecs`)
    # Each call's real seconds (T2I, SR on either side) stray from its cost by this share
    # (normal, independent), and the planner knows it (`EdgeCosts.spread`). 0: deterministic
    # workers, and one job on an idle edge finishes exactly when `predict()` says.
    spread: float = 0.0

    def costs(self) -> Costs:
        """The planner's belief: the profile's costs (slow-down factors included, which the
        simulated workers apply too) with this scenario's spread."""
        p = self.profile
        device = replace(p.device, sr_s_per_px=p.device.sr_s_per_px / self.device_speed)
        edge = replace(p.edge, spread=self.spread)
        return Costs(edge=edge, device=device, link=self.link)

    def noise(self) -> Callable[[float], float]:
        """Each call's real seconds from its cost: exact, or off by `spread` at random."""
        if self.spread <= 0:
            return float
        rng = random.Random(self.seed + 7919)
        return lambda cost: cost * max(0.05, rng.gauss(1.0, self.spread))


def simulate(scenario: Scenario) -> list[JobRecord]:
    """Run one scenario to the end; every job's record, in submission order."""
    return simulate_edge(scenario)[0]


def simulate_edge(scenario: Scenario) -> tuple[list[JobRecord], Edge]:
    """`simulate`, and the edge it ran on (its SR calls: tiles and jobs per call)."""
    sim = Sim()
    planner = scenario.costs()
    truth = scenario.truth or planner
    noise = scenario.noise()
    edge = Edge.create(sim, scenario.replicas, scenario.batching,
                       lambda n, px: noise(truth.edge.sr_batch(n, px)),
                       scenario.profile.sr_batch, scenario.batch_wait_s,
                       truth.edge.sr_beside_light, truth.edge.light_beside_sr)
    rng = random.Random(scenario.seed)
    n = len(scenario.profile.tiles())
    fixed = list(scenario.scores or ())
    counter = iter(range(10**9))

    def scores() -> list[float]:
        if fixed:
            return list(fixed[next(counter) % len(fixed)])
        return tile_scores(n, scenario.profile.fg_share, scenario.profile.threshold, rng)

    records: list[JobRecord] = []
    for i in range(scenario.devices):
        device = Device(sim, edge, i, scenario.policy, planner, truth, scenario.profile,
                        scenario.jobs_per_device, scenario.think_s, scores, records,
                        scenario.tile_quality, noise)
        sim.at(0.0, device.submit)
    sim.run()
    return records, edge


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarise(scenario: Scenario, records: Sequence[JobRecord]) -> dict[str, Any]:
    latencies = [r.latency for r in records]
    span = max(r.finished for r in records) - min(r.submitted for r in records)
    errors = [abs(r.predicted_total - r.latency) / r.latency for r in records]
    n = len(records)
    tiles = n * len(records[0].placement) if records else 1
    return {
        "scenario": scenario.name, "policy": scenario.policy,
        "profile": scenario.profile.name, "devices": scenario.devices,
        "device_speed": scenario.device_speed,
        "down_mbit": round(scenario.link.down_bytes_per_s / 125_000, 3),
        "rtt_ms": round(scenario.link.rtt_s * 1000, 3), "jobs": n,
        "latency_s": round(statistics.fmean(latencies), 4),
        "p50_s": round(percentile(latencies, 50), 4),
        "p95_s": round(percentile(latencies, 95), 4),
        "jobs_per_min": round(60 * n / span, 3) if span > 0 else math.inf,
        "edge_busy_s": round(statistics.fmean(r.edge_busy for r in records), 4),
        "bytes_down": round(statistics.fmean(r.bytes_down for r in records)),
        "predicted_s": round(statistics.fmean(r.predicted_total for r in records), 4),
        "prediction_error": round(statistics.fmean(errors), 4),
        "fg_diffused": all(r.foreground_diffused for r in records),
        "diffusion_share": round(sum(p == EDGE_DIFFUSION for r in records
                                     for p in r.placement) / tiles, 3),
        "edge_light_share": round(sum(p == EDGE_LIGHT for r in records
                                      for p in r.placement) / tiles, 3),
        "diffusion_to_light": round(scenario.profile.diffusion_to_light(scenario.device_speed),
                                    3),
    }


def run(scenario: Scenario) -> dict[str, Any]:
    return summarise(scenario, simulate(scenario))

