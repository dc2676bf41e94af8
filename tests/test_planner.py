"""The planner's decisions on synthetic profiles: each rule is checked against its opposite."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter

import pytest

from hybridsr.imaging.tiles import tile_grid
from hybridsr.protocol import ClientStats, DeviceProfile
from hybridsr.server.costs import DeviceCosts, EdgeCosts, LinkCosts, fit_t2i
from hybridsr.server.planner import (
    DEVICE_LIGHT,
    EDGE_DIFFUSION,
    EDGE_LIGHT,
    Costs,
    JobShape,
    choose_steps,
    place,
    predict,
)

TILES = tile_grid(128, 128, 32, 8)  # 25 tiles
SCORES = [i / (len(TILES) - 1) for i in range(len(TILES))]  # 0 … 1, 12 of them ≥ 0.5
FG = [s >= 0.5 for s in SCORES]


def shape(**overrides) -> JobShape:
    return JobShape(**{**dict(kind="generate", lr_width=128, lr_height=128, scale=4, steps=2,
                              tiles=TILES), **overrides})


def costs(device_s_per_px=1e-5, down=2.5e7, rtt=0.01, **edge) -> Costs:
    return Costs(EdgeCosts(**edge), DeviceCosts(sr_s_per_px=device_s_per_px),
                 LinkCosts(rtt_s=rtt, down_bytes_per_s=down, up_bytes_per_s=down))


def hybrid(s: JobShape, c: Costs) -> list[tuple[str, str]]:
    return place("hybrid", SCORES, 0.5, s, c)


def test_foreground_always_gets_diffusion_sr():
    for policy in ("hybrid", "edge-diffusion-all", "split-device", "split-edge"):
        placement = place(policy, SCORES, 0.5, shape(), costs())
        assert all(p == EDGE_DIFFUSION for p, f in zip(placement, FG, strict=True) if f), policy


def test_slow_device_sends_more_tiles_to_the_edge():
    fast = Counter(p[0] for p in hybrid(shape(), costs(device_s_per_px=1e-7)))
    slow = Counter(p[0] for p in hybrid(shape(), costs(device_s_per_px=1e-3)))
    assert slow["edge"] > fast["edge"]
    assert slow["device"] == 0 and fast["device"] > 0


def test_slow_link_sends_fewer_bytes():
    s = shape()
    slow_device = dict(device_s_per_px=2e-4)
    fast_link, slow_link = costs(down=1e8, **slow_device), costs(down=2e5, **slow_device)
    fast_bytes = predict(s, fast_link, hybrid(s, fast_link)).bytes_down
    slow_bytes = predict(s, slow_link, hybrid(s, slow_link)).bytes_down
    assert slow_bytes < fast_bytes
    assert Counter(hybrid(s, slow_link))[DEVICE_LIGHT] > Counter(hybrid(s, fast_link))[
        DEVICE_LIGHT]


def test_loaded_edge_keeps_only_foreground_tiles():
    c = costs(device_s_per_px=5e-5)
    idle = hybrid(shape(), c)
    loaded = hybrid(shape(sr_load=8, light_load=8), c)
    assert Counter(idle)[EDGE_LIGHT] + Counter(idle)[EDGE_DIFFUSION] > sum(FG)
    assert [p[0] == "edge" for p in loaded] == FG


def test_cheap_batching_pulls_background_into_diffusion():
    # An idle data-centre GPU: a batch of tiles costs about what one does.
    s = shape(sr_batch=32)
    c = costs(device_s_per_px=1e-4, sr_s_per_tile_px=1e-9, light_s_per_px=1e-4)
    assert Counter(hybrid(s, c))[EDGE_DIFFUSION] == len(TILES)


@pytest.mark.parametrize("device", [1e-7, 1e-5, 1e-4, 1e-3])
@pytest.mark.parametrize("down", [2e5, 2.5e6, 1e8])
@pytest.mark.parametrize("load", [0, 4])
def test_hybrid_is_never_predicted_slower_than_the_fixed_splits(device, down, load):
    s, c = shape(sr_load=load, light_load=load), costs(device_s_per_px=device, down=down)
    mine = predict(s, c, hybrid(s, c)).total
    for policy in ("edge-diffusion-all", "split-device", "split-edge"):
        other = predict(s, c, place(policy, SCORES, 0.5, s, c)).total
        assert mine <= other * 1.001, policy


def test_latency_budget_trades_steps():
    s, c = shape(), costs(t2i_s_per_step_px=2e-5)
    generous = choose_steps(s, c, 60.0, 2, 8, 0.5, "hybrid")
    tight_total = predict(shape(steps=2), c, hybrid(shape(steps=2), c)).total
    tight = choose_steps(s, c, tight_total, 2, 8, 0.5, "hybrid")
    assert generous == 8 and tight <= 2
    assert choose_steps(s, c, None, 3, 8, 0.5, "hybrid") == 3


def test_top_k_and_reference_policies():
    top3 = place("top-k", SCORES, 0.5, shape(), costs(), top_k=3)
    assert [i for i, p in enumerate(top3) if p == EDGE_DIFFUSION] == [22, 23, 24]
    assert set(place("device-light-all", SCORES, 0.5, shape(), costs())) == {DEVICE_LIGHT}
    assert set(place("edge-light-all", SCORES, 0.5, shape(), costs())) == {EDGE_LIGHT}


def test_prediction_counts_queue_and_link():
    c = costs()
    base = predict(shape(), c, hybrid(shape(), c))
    queued = predict(shape(queue_wait_s=5.0), c, hybrid(shape(), c))
    assert math.isclose(queued.total - base.total, 5.0, rel_tol=1e-6)
    far = costs(rtt=0.5)
    # one round trip more: the request up and the plan down
    assert predict(shape(), far, hybrid(shape(), far)).total > base.total + 0.45


@pytest.mark.parametrize(
    "stats",
    [None, ClientStats(), ClientStats(rtt_s=1e6, down_bytes_per_s=1e-3 + 1.0)],
    ids=["missing", "empty", "absurd"],
)
def test_missing_or_absurd_link_falls_back_with_a_warning(stats, caplog):
    with caplog.at_level(logging.WARNING):
        link = LinkCosts.from_client(stats)
    assert link == LinkCosts()
    assert "link measurements" in caplog.text or "no link" in caplog.text


@pytest.mark.parametrize("value", [0.0, float("inf"), 500.0])
def test_absurd_device_speed_falls_back_with_a_warning(value, caplog):
    profile = DeviceProfile(cores=1, memory_total_mb=1, memory_available_mb=1,
                            sr_ms_per_lr_pixel=value)
    with caplog.at_level(logging.WARNING):
        device = DeviceCosts.from_client(profile, None)
    assert device == DeviceCosts() and "absurd" in caplog.text
    s = shape()
    placement = hybrid(s, Costs(EdgeCosts(), device, LinkCosts()))
    assert len(placement) == len(TILES)


def test_device_time_is_priced_per_pixel_read_by_each_region_of_adjacent_tiles():
    """The SDK upscales adjacent device tiles as one region with its context once: all 25
    tiles on the device read the 128² image once, not 25 overlapping crops."""
    c = costs(device_s_per_px=1e-5)
    c.device = dataclasses.replace(c.device, context=18)
    s = shape(kind="enhance")
    every = predict(s, c, [DEVICE_LIGHT] * len(TILES))
    assert every.device_done - every.plan_at_device == pytest.approx(128 * 128 * 1e-5)
    corner = [DEVICE_LIGHT if i == 0 else EDGE_DIFFUSION for i in range(len(TILES))]
    one = predict(s, c, corner)  # tile 0 alone: 32² plus 18 px of context inside the image
    assert one.device_done - one.plan_at_device == pytest.approx((32 + 18) ** 2 * 1e-5)


def test_device_profile_says_how_much_context_its_sr_reads():
    profile = DeviceProfile(cores=2, memory_total_mb=1.0, memory_available_mb=1.0,
                            sr_ms_per_lr_pixel=0.01, sr_context=18)
    assert DeviceCosts.from_client(profile, None).context == 18
    unknown = profile.model_copy(update={"sr_context": None})  # an older device
    assert DeviceCosts.from_client(unknown, None).context == 0


def test_measured_device_speed_is_used():
    stats = ClientStats(device_sr_s_per_lr_px=3e-6)
    assert DeviceCosts.from_client(None, stats).sr_s_per_px == 3e-6


def test_sr_cost_learns_that_batching_is_cheap():
    e = EdgeCosts(sr_batch_base_s=0.1, sr_s_per_tile_px=1e-4)
    for _ in range(5):  # a GPU-like edge: 1 tile 0.2 s, 4 tiles 0.23 s (1024 px tiles)
        e.observe_sr(0.2, 1, 1024)
        e.observe_sr(0.23, 4, 1024)
    assert math.isclose(e.sr_batch(1, 1024), 0.2, rel_tol=0.02)
    assert math.isclose(e.sr_batch(4, 1024), 0.23, rel_tol=0.02)
    assert e.sr_batch(16, 1024) < 0.4


def test_edge_costs_follow_observations():
    e = EdgeCosts()
    before = e.t2i(2, 4096)
    for _ in range(30):
        e.observe_t2i(2 * before, 2, 4096)
    assert math.isclose(e.t2i(2, 4096), 2 * before, rel_tol=0.01)
    e.observe_t2i(float("nan"), 2, 4096)
    assert math.isclose(e.t2i(2, 4096), 2 * before, rel_tol=0.01)


def test_a_far_off_start_up_profile_is_corrected_by_one_job():
    e = EdgeCosts(t2i_s_per_step_px=3e-4, t2i_s_per_px=2e-4)  # measured on a busy CPU
    e.observe_t2i(0.03, 2, 4096)
    assert math.isclose(e.t2i(2, 4096), 0.03, rel_tol=1e-6)
    e.observe_t2i(0.036, 2, 4096)  # near the model: a gentle step
    assert 0.03 < e.t2i(2, 4096) < 0.036


def test_latency_budget_picks_the_scale():
    """2048²: 1024²×2 when the budget allows the bigger T2I, else 512²×4."""
    from hybridsr.server.planner import choose_scale

    c = costs(t2i_s_per_step_px=1e-6, device_s_per_px=1e-6)

    def shape_for(scale: int) -> JobShape:
        side = 2048 // scale
        return shape(lr_width=side, lr_height=side, scale=scale,
                     tiles=tile_grid(side, side, 128, 16))

    at = {s: predict(shape_for(s), c, place("hybrid", [0.0] * len(shape_for(s).tiles), 0.5,
                                            shape_for(s), c)).total for s in (2, 4)}
    assert at[2] > at[4]
    assert choose_scale(2048, 2048, [2, 3, 4], 8, shape_for, c, 1e9, "hybrid") == 2
    assert choose_scale(2048, 2048, [2, 3, 4], 8, shape_for, c, 1e-6, "hybrid") == 4
    assert choose_scale(2048, 2048, [2, 3, 4], 8, shape_for, c, None, "hybrid") == 4
    assert choose_scale(2040, 2040, [2, 3, 4], 8, shape_for, c, 1e9, "hybrid") == 3  # 2040/16 ∉ ℕ


def test_with_cross_job_batching_a_job_waits_for_the_tiles_ahead_not_the_jobs_ahead():
    """Seven jobs with two diffusion tiles each wait ahead of a new one with two. Taking turns,
    that is eight calls of two tiles; packed into shared calls of 16, it is one call."""
    c = costs(sr_batch_base_s=0.4, sr_s_per_tile_px=1e-6)  # launch-bound, like a GPU
    placement = [EDGE_DIFFUSION if i < 2 else DEVICE_LIGHT for i in range(len(TILES))]
    px = TILES[0].w * TILES[0].h
    one_call = c.edge.sr_batch(16, px)
    turns = predict(shape(sr_batch=16, sr_load=7), c, placement)
    packed = predict(shape(sr_batch=16, sr_load=7, sr_tiles_ahead=14), c, placement)
    idle = predict(shape(sr_batch=16), c, placement)
    sr_done = {name: p.edge_done - p.plan_sent for name, p in
               (("turns", turns), ("packed", packed), ("idle", idle))}
    assert sr_done["turns"] - sr_done["idle"] == pytest.approx(7 * c.edge.sr_batch(2, px))
    assert sr_done["packed"] - sr_done["idle"] == pytest.approx(
        one_call - c.edge.sr_batch(2, px))
    assert sr_done["packed"] < sr_done["turns"] / 3
    # A call that overflows: 15 ahead + 2 own tiles is one full call and one of a single tile.
    over = predict(shape(sr_batch=16, sr_tiles_ahead=15), c, placement)
    assert over.edge_done - over.plan_sent - (sr_done["idle"] - c.edge.sr_batch(2, px)) == \
        pytest.approx(one_call + c.edge.sr_batch(1, px))
    assert packed.edge_busy == idle.edge_busy  # the job adds its own tiles' work only
def test_one_stalled_call_does_not_move_the_sr_cost():
    e = EdgeCosts(sr_batch_base_s=0.1, sr_s_per_tile_px=1e-4)
    for _ in range(5):
        e.observe_sr(0.2, 1, 1024)
        e.observe_sr(0.23, 4, 1024)
    e.observe_sr(2.0, 4, 1024)  # the CPU was busy elsewhere for this one
    assert math.isclose(e.sr_batch(4, 1024), 0.23, rel_tol=0.03)
    assert e.spread < 0.5  # …nor make every prediction uncertain


def test_the_later_of_edge_and_device_is_expected_later_than_either_mean():
    from hybridsr.server.timeline import expected_max

    assert expected_max(1.0, 1.0, 0.0, 0.0) == 1.0
    both = expected_max(1.0, 1.0, 0.1, 0.1)
    assert math.isclose(both, 1.0 + math.hypot(0.1, 0.1) / math.sqrt(2 * math.pi))
    assert math.isclose(expected_max(3.0, 1.0, 0.1, 0.1), 3.0, rel_tol=1e-6)  # far apart


def test_workers_that_share_hardware_slow_each_other():
    from hybridsr.server.timeline import side_by_side

    assert side_by_side([1.0], [1.0], 0.0) == ([1.0], [1.0])  # separate hardware
    assert side_by_side([1.0], [1.0], 0.0, 2.0, 2.0) == ([2.0], [2.0])  # one shared core
    first, second = side_by_side([1.0, 1.0], [0.5], 0.0, 2.0, 2.0)
    assert second == [1.0] and first == [1.5, 2.5]  # alone again after the light call


def test_sr_learns_how_much_light_sr_beside_it_slows_it():
    e = EdgeCosts(sr_batch_base_s=0.1, sr_s_per_tile_px=1e-4)
    for _ in range(3):
        e.observe_sr(0.2, 1, 1024)
        e.observe_sr(0.23, 4, 1024)
    alone = e.sr_batch(4, 1024)
    for _ in range(3):
        e.observe_sr(2 * alone, 4, 1024, beside=1.0)  # the whole call beside light SR
    assert math.isclose(e.sr_beside_light, 2.0, rel_tol=0.01)
    assert math.isclose(e.sr_batch(4, 1024), alone)  # the solo cost stays what it was
    s, c = shape(), costs()
    split_edge = place("split-edge", SCORES, 0.5, s, c)
    slow = Costs(e, c.device, c.link)
    fast = Costs(dataclasses.replace(e, sr_beside_light=1.0), c.device, c.link)
    assert predict(s, slow, split_edge).edge_done > predict(s, fast, split_edge).edge_done


def _timings(cost, sizes=(64 * 64, 128 * 128)):
    """What the start-up profile measures: (px, 1 step, 3 steps) at two sizes."""
    return [(px, cost(1, px), cost(3, px)) for px in sizes]


@pytest.mark.parametrize("cost", [
    lambda steps, px: 0.01 + 0.02 * steps,  # a GPU at small sizes: launch-bound
    lambda steps, px: px * (1e-7 + steps * 1e-6),  # a CPU: per pixel
    lambda steps, px: 0.005 + px * 2e-7 + steps * (0.01 + px * 1e-6),  # both
], ids=["launch-bound", "per-pixel", "mixed"])
def test_t2i_fitted_at_two_small_sizes_predicts_a_large_one(cost):
    fitted = fit_t2i(*_timings(cost))
    assert fitted is not None
    base, per_px, step_base, per_step_px = fitted
    e = EdgeCosts(t2i_base_s=base, t2i_s_per_px=per_px, t2i_step_base_s=step_base,
                  t2i_s_per_step_px=per_step_px)
    for steps in (1, 4):
        assert e.t2i(steps, 512 * 512) == pytest.approx(cost(steps, 512 * 512), rel=1e-6)


def test_t2i_fit_refuses_timings_no_model_can_come_from():
    assert fit_t2i((4096, 0.0, 0.0), (16384, 0.0, 0.0)) is None
    assert fit_t2i((4096, 0.1, float("inf")), (16384, 0.2, 0.3)) is None
    assert fit_t2i((4096, 0.1, 0.2), (4096, 0.1, 0.2)) is None


def test_t2i_fit_stays_non_negative_when_busy_timings_cross():
    crossed = [(64 * 64, 0.30, 0.50), (128 * 128, 0.10, 0.12)]  # the larger came out faster
    parts = fit_t2i(*crossed)
    assert parts is not None and min(parts) >= 0
    e = EdgeCosts(t2i_base_s=parts[0], t2i_s_per_px=parts[1], t2i_step_base_s=parts[2],
                  t2i_s_per_step_px=parts[3])
    assert 0 < e.t2i(1, 512 * 512) and e.t2i(2, 512 * 512) > e.t2i(1, 512 * 512)
