"""The fast planner makes the same plans as the straightforward one (tests/planner_reference.py).

The planner prices splits on numpy columns, groups the device's regions in numpy, skips
splits whose lower bound cannot win and shares work between codec candidates: none of that
may change a decision. On random grids, scores, costs and loads: identical placements and
codec choices, predictions equal to float tolerance.
"""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import planner_reference as ref
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridsr.imaging.compose import device_regions, read_px
from hybridsr.imaging.regions import region_read_px
from hybridsr.imaging.tiles import Tile, tile_grid
from hybridsr.protocol.images import LOSSY_BY_QUALITY
from hybridsr.server.costs import CodecCosts, DeviceCosts, EdgeCosts, LinkCosts
from hybridsr.server.planner import (
    IDLE_DEVICE,
    _split_points,
    choose_codec,
    choose_steps,
    place,
)
from hybridsr.server.timeline import (
    DEVICE_COPY,
    DEVICE_LIGHT,
    EDGE_DIFFUSION,
    EDGE_LIGHT,
    Costs,
    JobShape,
    Timeline,
    predict,
    side_by_side,
)

CHECK = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# The search's own decisions: enough examples that a split wrongly skipped shows (a bound 1%
# too eager was caught within 150).
SEARCH = settings(CHECK, max_examples=150)


def log_uniform(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(math.log10(low), math.log10(high)).map(lambda e: 10**e)


@st.composite
def grids(draw, most: int = 10) -> tuple[int, int, list[Tile]]:
    """A tile grid of up to `most` × `most` tiles, the last ones flush with the image end."""
    tile = draw(st.sampled_from([8, 16, 24, 32]))
    overlap = draw(st.integers(0, tile // 2))
    stride = tile - overlap
    width, height = (stride * (draw(st.integers(1, most)) - 1) + tile
                     + draw(st.integers(0, stride - 1)) for _ in range(2))
    return width, height, tile_grid(width, height, tile, overlap)


@st.composite
def jobs(draw, most: int = 10) -> tuple[JobShape, Costs, list[float]]:
    """A job on a random grid with random costs, loads and codec figures, and tile scores."""
    width, height, tiles = draw(grids(most))
    slowdown = st.sampled_from([1.0, 1.5, 2.0]) | st.floats(1.0, 4.0)
    edge = EdgeCosts(
        t2i_s_per_step_px=draw(log_uniform(1e-8, 1e-4)), t2i_s_per_px=draw(log_uniform(1e-9, 1e-5)),
        sr_batch_base_s=draw(log_uniform(1e-3, 1.0)),
        sr_s_per_tile_px=draw(log_uniform(1e-9, 1e-4)),
        light_s_per_px=draw(log_uniform(1e-9, 1e-4)),
        spread=draw(st.sampled_from([0.0, 0.1]) | st.floats(0.0, 0.4)),
        sr_beside_light=draw(slowdown), light_beside_sr=draw(slowdown))
    device = DeviceCosts(sr_s_per_px=draw(log_uniform(1e-8, 1e-3)),
                         stitch_s_per_hr_px=draw(log_uniform(1e-10, 1e-7)),
                         context=draw(st.integers(0, 24)))
    link = LinkCosts(rtt_s=draw(st.floats(0.0, 0.3)), down_bytes_per_s=draw(log_uniform(1e4, 1e9)),
                     up_bytes_per_s=draw(log_uniform(1e4, 1e9)))
    shape = JobShape(
        kind=draw(st.sampled_from(["generate", "enhance"])), lr_width=width, lr_height=height,
        scale=draw(st.integers(1, 4)), steps=draw(st.integers(1, 4)), tiles=tiles,
        sr_batch=draw(st.integers(1, 16)), light_batch=draw(st.sampled_from([1, 1, 2, 4, 16])),
        sr_load=draw(st.integers(0, 4)), light_load=draw(st.integers(0, 4)),
        sr_tiles_ahead=draw(st.none() | st.integers(0, 40)),
        queue_wait_s=draw(st.floats(0.0, 2.0)), bytes_per_px=draw(st.floats(0.05, 3.0)),
        encode_s_per_px=draw(st.just(0.0) | log_uniform(1e-10, 1e-6)),
        decode_s_per_px=draw(st.just(0.0) | log_uniform(1e-10, 1e-6)),
        edge_light=draw(st.booleans()))
    # Some ties among the scores: the ranking must break them the same way.
    score = st.floats(0.0, 1.0) | st.sampled_from([0.0, 0.5, 1.0])
    scores = draw(st.lists(score, min_size=len(tiles), max_size=len(tiles)))
    return shape, Costs(edge, device, link), scores


def assert_same_prediction(fast, slow) -> None:
    for f in dataclasses.fields(fast):
        a, b = getattr(fast, f.name), getattr(slow, f.name)
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (f.name, a, b)


@CHECK
@given(grid=grids(14), seed=st.integers(0, 2**32 - 1), context=st.integers(0, 24))
def test_regions_in_numpy_are_the_sdks_regions(grid, seed, context):
    """Several subsets of one grid priced in one pass read what `device_regions` reads."""
    width, height, tiles = grid
    rng = random.Random(seed)
    subsets = [[t for t in tiles if rng.random() < share] for share in (0.2, 0.5, 0.8, 1.0)]
    rows = [(g, t) for g, subset in enumerate(subsets)
            for t in sorted(subset, key=lambda t: (t.y, t.x))]  # reading order, per set
    group = np.array([g for g, _ in rows], dtype=np.int64)
    x, y, w, h = (np.array([getattr(t, k) for _, t in rows], dtype=np.int64).reshape(-1)
                  for k in "xywh")
    read, of = region_read_px(x, y, w, h, group, context, width, height)
    for g, subset in enumerate(subsets):
        expected = sorted(read_px(r, context, width, height) for r in device_regions(subset))
        assert sorted(read[of == g].tolist()) == expected


@CHECK
@given(seed=st.integers(0, 2**32 - 1), context=st.integers(0, 8))
def test_regions_of_unequal_tiles_are_the_sdks_regions(seed, context):
    """Tiles of three sizes on a coarse lattice: runs of unequal heights, regions that grow
    downwards by more than one row, overlapping and duplicate tiles."""
    rng = random.Random(seed)
    tiles = sorted((Tile(i, 5 * rng.randint(0, 8), 5 * rng.randint(0, 8),
                         rng.choice([5, 10, 15]), rng.choice([5, 10, 15]))
                    for i in range(rng.randint(0, 24))), key=lambda t: (t.y, t.x))
    x, y, w, h = (np.array([getattr(t, k) for t in tiles], dtype=np.int64).reshape(-1)
                  for k in "xywh")
    read, _ = region_read_px(x, y, w, h, np.zeros(len(tiles), dtype=np.int64), context,
                             50, 50)
    assert sorted(read.tolist()) == sorted(read_px(r, context, 50, 50)
                                           for r in device_regions(tiles))


def test_a_region_stays_open_down_to_its_deepest_tile():
    """A tall tile, a short one inside its rows, one below the short one touching the tall
    one: the SDK stacks all three, so the region's bottom is its deepest tile's."""
    tiles = [Tile(0, 0, 0, 10, 15), Tile(1, 0, 5, 10, 5), Tile(2, 0, 15, 10, 5)]
    assert len(device_regions(tiles)) == 1
    x, y, w, h = (np.array([getattr(t, k) for t in tiles]) for k in "xywh")
    read, _ = region_read_px(x, y, w, h, np.zeros(3, dtype=np.int64), 0, 50, 50)
    assert read.tolist() == [10 * 20]


@CHECK
@given(first=st.lists(st.floats(0.0, 2.0), max_size=12),
       second=st.lists(st.floats(0.0, 2.0), max_size=12),
       start=st.floats(0.0, 10.0), slow=st.tuples(st.floats(1.0, 4.0), st.floats(1.0, 4.0)))
def test_side_by_side_in_closed_form_is_the_stepped_workers(first, second, start, slow):
    fast, stepped = side_by_side(first, second, start, *slow), ref.side_by_side(
        first, second, start, *slow)
    for a, b in zip(fast, stepped, strict=True):
        assert len(a) == len(b)
        assert all(math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-9) for u, v in zip(a, b,
                                                                                  strict=True))


@CHECK
@given(job=jobs(12), seed=st.integers(0, 2**32 - 1))
def test_any_placement_is_predicted_as_the_reference_walks_it(job, seed):
    shape, costs, _ = job
    rng = random.Random(seed)
    places = [EDGE_DIFFUSION, EDGE_LIGHT, DEVICE_LIGHT, DEVICE_COPY]
    weights = [rng.random() for _ in places]
    placement = rng.choices(places, weights, k=len(shape.tiles))
    assert_same_prediction(predict(shape, costs, placement),
                           ref.predict(shape, costs, placement))


@SEARCH
@given(job=jobs(), threshold=st.floats(0.0, 1.0))
def test_hybrid_places_every_tile_as_the_full_search_does(job, threshold):
    shape, costs, scores = job
    fast = place("hybrid", scores, threshold, shape, costs)
    assert fast == ref.place_hybrid(scores, threshold, shape, costs)
    assert_same_prediction(predict(shape, costs, fast), ref.predict(shape, costs, fast))


@CHECK
@given(job=jobs(), threshold=st.floats(0.0, 1.0))
def test_no_split_finishes_before_its_lower_bound(job, threshold):
    """The search skips a split whose lower bound cannot win: the bound must never exceed
    the split's predicted total, with the device's side known or taken as idle."""
    shape, costs, scores = job
    timeline = Timeline(shape, costs)
    fg = [s >= threshold for s in scores]
    background = sorted((i for i, f in enumerate(fg) if not f), key=lambda i: -scores[i])
    rank = np.full(len(fg), -1)
    rank[background] = np.arange(len(background))
    for k_diff, light_counts in _split_points(len(background), shape):
        diffusion = timeline.diffusion_lots(np.flatnonzero(rank < k_diff))
        for k_light in light_counts:
            kept = k_diff + k_light
            light = timeline.light_lots(np.flatnonzero((rank >= k_diff) & (rank < kept)))
            [device] = timeline.device((rank >= kept)[None, :])
            total = timeline.prediction(timeline.edge(timeline.edge_work(diffusion, light)),
                                        device).total
            edge_hr_px = float(timeline.hr_px[rank < kept].sum())
            for side in (device, IDLE_DEVICE):
                least = timeline.least_total(diffusion, edge_hr_px, side)
                assert least <= total * (1 + 1e-12), (k_diff, k_light, least, total)


@CHECK
@given(job=jobs(8), threshold=st.floats(0.0, 1.0),
       quality=st.sampled_from(["lossless", "high", "balanced"]),
       lossy_bytes=st.floats(0.02, 1.0))
def test_codec_choice_sharing_work_between_codecs_is_the_same(job, threshold, quality,
                                                              lossy_bytes):
    shape, costs, scores = job
    codecs = CodecCosts()
    for name in LOSSY_BY_QUALITY["balanced"]:  # lossy bytes from cheap to nearly lossless
        codecs.get(name).bytes_per_px = lossy_bytes * codecs.get("png").bytes_per_px
    lossy = LOSSY_BY_QUALITY[quality]
    fast = choose_codec("hybrid", scores, threshold, shape, costs, codecs, "png", lossy,
                        quality)
    name, placement, prediction = ref.choose_codec("hybrid", scores, threshold, shape, costs,
                                                   codecs, "png", lossy, quality)
    assert (fast.codec, fast.placement) == (name, placement)
    assert_same_prediction(fast.prediction, prediction)


@CHECK
@given(job=jobs(8), most=st.integers(1, 12), budget=st.floats(0.0, 1.0))
def test_step_choice_from_one_prediction_is_the_same(job, most, budget):
    shape, costs, _ = job
    # Budgets between the totals of the fewest and the most steps, and beyond.
    low, high = (ref.predict(s, costs, place("split-device", [1.0] * len(s.tiles), 0.5, s,
                                             costs)).total
                 for s in (dataclasses.replace(shape, steps=1),
                           dataclasses.replace(shape, steps=most)))
    budget_s = low + (high - low) * (budget * 1.4 - 0.2)
    assert choose_steps(shape, costs, budget_s, 2, most, 0.5, "hybrid") == ref.choose_steps(
        shape, costs, budget_s, most, 0.5, "hybrid")


@pytest.mark.parametrize("device_s_per_px", [1e-6, 1e-5, 1e-4, 1e-3])
def test_a_default_2048_job_is_placed_as_the_full_search_does(device_s_per_px):
    """512² LR at the edge's default 32 px tiles: 441 tiles, the size the search was slow at."""
    tiles = tile_grid(512, 512, 32, 8)
    rng = random.Random(7)
    scores = [rng.random() for _ in tiles]
    shape = JobShape(kind="generate", lr_width=512, lr_height=512, scale=4, steps=2,
                     tiles=tiles)
    costs = Costs(EdgeCosts(), DeviceCosts(sr_s_per_px=device_s_per_px, context=10),
                  LinkCosts(rtt_s=0.01, down_bytes_per_s=2.5e6, up_bytes_per_s=1.25e6))
    assert place("hybrid", scores, 0.5, shape, costs) == ref.place_hybrid(scores, 0.5, shape,
                                                                          costs)
