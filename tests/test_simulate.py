"""The discrete-event simulator (benchmarks/simulate.py) agrees with the planner it drives."""

from __future__ import annotations

import random
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from hybridsr.server.costs import DeviceCosts, EdgeCosts
from hybridsr.server.planner import EDGE_DIFFUSION, place, predict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import simulate as sim  # noqa: E402

SMALL = sim.Profile("small", EdgeCosts(), DeviceCosts(), 96, 96, tile=32, overlap=8,
                    fg_share=0.3)
PROFILES = [SMALL, sim.h200_profile()]


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
@pytest.mark.parametrize("link", list(sim.LINKS))
@pytest.mark.parametrize("policy", [*sim.SIM_POLICIES, "edge-light-all", "top-k", "direct-hr"])
def test_one_job_on_an_idle_edge_finishes_when_predict_says(profile, link, policy):
    scenario = sim.Scenario("one", profile, policy, sim.link_costs(link), devices=1,
                            jobs_per_device=1, seed=5)
    (record,) = sim.simulate(scenario)
    scores = sim.tile_scores(len(profile.tiles()), profile.fg_share, profile.threshold,
                             random.Random(5))
    shape, costs = sim.job_shape(profile), scenario.costs()
    placement = place(policy, scores, profile.threshold, shape, costs)
    expected = predict(shape, costs, placement)
    assert record.placement == placement
    assert record.latency == pytest.approx(expected.total, rel=1e-12, abs=1e-12)
    assert record.predicted_total == pytest.approx(expected.total, rel=1e-12, abs=1e-12)
    assert record.bytes_down == pytest.approx(expected.bytes_down)
    assert record.edge_busy == pytest.approx(expected.edge_busy)


@pytest.mark.parametrize("policy", ["hybrid", "edge-diffusion-all", "split-device"])
def test_more_load_never_makes_a_job_finish_sooner(policy):
    link = sim.link_costs("wifi")
    latencies = []
    for devices in (1, 2, 4, 8):
        records = sim.simulate(sim.Scenario("load", SMALL, policy, link, devices, 3, seed=1))
        latencies.append(sorted(r.latency for r in records))
    for fewer, more in zip(latencies, latencies[1:], strict=False):
        assert min(more) >= min(fewer) - 1e-12
        assert sum(more) / len(more) >= sum(fewer) / len(fewer) - 1e-12
        assert max(more) >= max(fewer) - 1e-12


def test_slower_truth_than_belief_only_delays_the_job():
    scenario = sim.Scenario("x", SMALL, "split-edge", sim.link_costs("lan"), seed=2)
    slow = scenario.costs()
    slow = replace(slow, edge=replace(slow.edge, sr_batch_base_s=slow.edge.sr_batch_base_s * 3))
    believed = sim.simulate(scenario)
    real = sim.simulate(replace(scenario, truth=slow))
    for b, r in zip(believed, real, strict=True):
        assert r.placement == b.placement and r.latency > b.latency
        assert r.predicted_total < r.latency  # the planner did not know


@pytest.mark.parametrize("devices", [1, 4])
@pytest.mark.parametrize("link", ["lan", "4g"])
def test_hybrid_is_no_slower_than_each_fixed_policy_in_a_small_scenario(devices, link):
    def mean_latency(policy: str) -> float:
        records = sim.simulate(sim.Scenario("s", SMALL, policy, sim.link_costs(link), devices,
                                            2, seed=3))
        if policy != "device-light-all":
            assert all(r.foreground_diffused for r in records)
        return sum(r.latency for r in records) / len(records)

    hybrid = mean_latency("hybrid")
    for policy in sim.FIXED:
        assert hybrid <= mean_latency(policy) * 1.0001, policy


def test_foreground_share_and_summary_rows():
    rng = random.Random(0)
    scores = sim.tile_scores(20, 0.25, 0.5, rng)
    assert sum(s >= 0.5 for s in scores) == 5
    row = sim.run(sim.Scenario("row", SMALL, "hybrid", sim.link_costs("wifi"), 2, 2))
    assert {"scenario", "policy", "latency_s", "p95_s", "predicted_s"} <= set(row)
    assert row["fg_diffused"] and row["jobs"] == 4
    assert sim.percentile([1.0, 2.0, 3.0], 50) == 2.0
    assert EDGE_DIFFUSION == ("edge", "diffusion")
