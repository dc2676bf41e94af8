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


# --- scale-out: replicas and cross-job batching (benchmarks/scale.py drives these) ---------

import scale  # noqa: E402

# A GPU-like SR call: the fixed part dominates, so packing tiles of many jobs pays.
LAUNCH_BOUND = replace(SMALL, name="launch-bound", sr_batch=16, fg_share=0.2,
                       edge=EdgeCosts(sr_batch_base_s=0.5, sr_s_per_tile_px=1e-6))


@pytest.mark.parametrize("replicas", [1, 2])
def test_batching_alone_on_an_idle_edge_still_finishes_when_predict_says(replicas):
    scenario = sim.Scenario("one", SMALL, "split-device", sim.link_costs("wifi"), 1, 1,
                            seed=5, replicas=replicas, batching=True)
    (record,) = sim.simulate(scenario)
    scores = sim.tile_scores(len(SMALL.tiles()), SMALL.fg_share, SMALL.threshold,
                             random.Random(5))
    shape, costs = sim.job_shape(SMALL, sr_tiles_ahead=0), scenario.costs()
    expected = predict(shape, costs, place("split-device", scores, SMALL.threshold, shape,
                                           costs))
    assert record.latency == pytest.approx(expected.total, rel=1e-12)


def test_cross_job_batching_packs_tiles_of_several_jobs_into_one_call():
    def run(batching: bool):
        scenario = sim.Scenario("b", LAUNCH_BOUND, "split-device", sim.link_costs("lan"), 8,
                                3, seed=1, batching=batching, batch_wait_s=0.002)
        records, edge = sim.simulate_edge(scenario)
        return sim.summarise(scenario, records), edge.sr_calls

    (off, off_calls), (on, on_calls) = run(False), run(True)
    assert all(jobs == 1 for _, jobs in off_calls)
    assert max(tiles for tiles, _ in on_calls) <= LAUNCH_BOUND.sr_batch
    assert sum(jobs for _, jobs in on_calls) / len(on_calls) > 2
    assert sum(t for t, _ in on_calls) == sum(t for t, _ in off_calls)  # same work, fewer calls
    assert on["jobs_per_min"] > 1.5 * off["jobs_per_min"] and on["p95_s"] < off["p95_s"]


def test_replicas_multiply_throughput_and_scale_rows_carry_the_goals():
    rows, goals = scale.sim_part(SMALL, ["edge-diffusion-all"], jobs=2, wait_s=0.0,
                                 replicas=(1, 2), devices=(4, 8))
    assert len(rows) == 2 * 2 * 2
    for row in rows:
        assert set(scale.ROW_KEYS) <= set(row) and row["backend"] == "sim"
    by = {(r["replicas"], r["devices"], r["batching"]): r for r in rows}
    for batching in (False, True):
        assert by[2, 8, batching]["jobs_per_min"] > 1.6 * by[1, 4, batching]["jobs_per_min"]
    for goal in goals["replicas"]:
        assert goal["replicas"] == 2 and goal["met"] and goal["ratio"] >= 1.6
    (batching,) = goals["batching"]
    assert batching["ratio"] > 0 and "per" in batching["why"]


# --- codecs, light lots, the learned slow-down and spread, the critical path ---------------

from hybridsr.protocol.images import LOSSY_BY_QUALITY  # noqa: E402
from hybridsr.server.planner import choose_codec  # noqa: E402

# Two codecs (this machine's measured bytes and times), light SR in lots of 3, and diffusion
# and light SR slowing each other as a CPU edge learns they do.
RICH = replace(SMALL, name="rich", light_batch=3,
               edge=EdgeCosts(sr_beside_light=1.8, light_beside_sr=1.4),
               codecs={"png": (1.7, 2.5e-7, 9e-8), "jpeg-q95": (0.32, 6e-9, 7e-9)})


@pytest.mark.parametrize("link", list(sim.LINKS))
@pytest.mark.parametrize("policy", ["hybrid", "split-edge", "edge-light-all",
                                    "edge-diffusion-all"])
def test_codecs_lots_and_slow_down_still_finish_when_predict_says(link, policy):
    scenario = sim.Scenario("one", RICH, policy, sim.link_costs(link), 1, 1, seed=5)
    (record,) = sim.simulate(scenario)
    scores = sim.tile_scores(len(RICH.tiles()), RICH.fg_share, RICH.threshold,
                             random.Random(5))
    choice = choose_codec(policy, scores, RICH.threshold, sim.job_shape(RICH),
                          scenario.costs(), RICH.codec_costs(), "png",
                          LOSSY_BY_QUALITY["high"], "high")
    assert (record.codec, record.placement) == (choice.codec, choice.placement)
    assert record.latency == pytest.approx(choice.prediction.total, rel=1e-9)
    assert record.bytes_down == pytest.approx(choice.prediction.bytes_down)


def test_the_slow_down_is_simulated_not_only_predicted():
    def latency(profile):
        scenario = sim.Scenario("one", profile, "split-edge", sim.link_costs("lan"), 1, 1,
                                seed=5)
        return sim.simulate(scenario)[0].latency

    alone = replace(RICH, edge=EdgeCosts())
    assert latency(RICH) > latency(alone) + 0.05


def test_the_critical_path_adds_up_to_the_latency_and_names_the_waits():
    alone = sim.simulate(sim.Scenario("a", RICH, "device-light-all", sim.link_costs("wifi"),
                                      1, 1, seed=1))[0]
    device_work = RICH.device.sr(96 * 96)  # every tile on the device: one region, the image
    assert alone.stages["device_light"] == pytest.approx(device_work)
    assert alone.stages["t2i"] == pytest.approx(RICH.edge.t2i(RICH.steps, 96 * 96))
    assert "queue" not in alone.stages and "diffusion" not in alone.stages
    busy = sim.simulate(sim.Scenario("b", RICH, "edge-diffusion-all", sim.link_costs("lan"),
                                     6, 2, seed=1))
    for record in busy:
        assert sum(record.stages.values()) == pytest.approx(record.latency, rel=1e-9)
    assert max(r.stages.get("queue", 0.0) for r in busy) > 0.1


def test_with_a_spread_the_mean_finish_is_the_planners_expected_later_side():
    # Edge and device finish together: the mean of the later side is above both means,
    # as the planner's Clark formula says; without the spread it would be 4% lower.
    profile = sim.Profile("balanced", EdgeCosts(sr_batch_base_s=0.2, sr_s_per_tile_px=2e-5),
                          DeviceCosts(sr_s_per_px=8.3e-5), 96, 96, tile=32, overlap=8,
                          fg_share=0.5)
    scores = tuple(sim.tile_scores(len(profile.tiles()), 0.5, 0.5, random.Random(1)))
    scenario = sim.Scenario("s", profile, "split-device", sim.link_costs("lan"), 1, 1000,
                            seed=3, scores=(scores,), spread=0.2)
    records = sim.simulate(scenario)
    shape, costs = sim.job_shape(profile), scenario.costs()
    expected = predict(shape, costs, place("split-device", list(scores), 0.5, shape, costs))
    exact = replace(costs, edge=replace(costs.edge, spread=0.0))
    without = predict(shape, exact, place("split-device", list(scores), 0.5, shape, exact))
    mean = sum(r.latency for r in records) / len(records)
    assert mean == pytest.approx(expected.total, rel=0.01)
    assert mean > without.total * 1.03


# --- where the time goes (simulate.py --breakdown) ------------------------------------------

from simulator import breakdown as bd  # noqa: E402

MEASURED = Path(__file__).resolve().parents[1] / "benchmarks" / "results" \
    / "h200-arch-sd-turbo-2048.json"


def test_the_breakdown_adds_up_and_labels_every_input():
    configs = bd.steps(sim.load_profile(str(MEASURED)))
    sources = {i.source for _, _, inputs in configs for i in inputs}
    assert {"measured", "issue", "what-if"} <= sources <= {"measured", "issue", "what-if",
                                                           "setting"}
    rows = bd.breakdown_rows(configs, links=("wifi",), policies=("hybrid", "split-device"),
                             jobs=1)
    assert len(rows) == 2 * len(configs)
    for row in rows:
        assert sum(row[c] for c in bd.COLUMNS) == pytest.approx(row["latency_s"], rel=1e-9)
    by = {(r["config"], r["policy"]): r for r in rows}
    first, last = configs[0][0], configs[-1][0]
    assert by[first, "hybrid"]["tiles_as"] == "png"  # the run had no lossy codec
    assert by[last, "hybrid"]["latency_s"] < by[first, "hybrid"]["latency_s"]
    assert by[last, "split-device"]["device_light"] > 1.0  # the device's 19 tiles


def test_the_one_step_what_if_keeps_the_vae_and_scales_the_unet():
    measured = sim.load_profile(str(MEASURED))
    knobs = bd.Knobs()
    one = bd.one_step_edge(measured, knobs)
    tile = 128 * 128
    unet_20 = measured.edge.sr_batch(16, tile) - 16 * knobs.x4_vae_s_per_tile
    assert one.sr_batch(16, tile) == pytest.approx(
        unet_20 / 20 + 16 * knobs.img2img_vae_s_per_tile)
