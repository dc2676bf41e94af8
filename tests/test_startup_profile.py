"""The edge's start-up profile on a real tiny-preset edge (127.0.0.1): what it teaches the
cost model before any job, and what it must leave out of the job metrics and histories."""

from __future__ import annotations

import os
import urllib.request

import pytest

from hybridsr.sdk import AsyncHybridClient
from hybridsr.server import BackgroundEdge, EdgeConfig
from hybridsr.server.costs import EdgeCosts
from hybridsr.server.edge import EDGE_KEY
from hybridsr.server.profiling import mean_beside

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"),
                                reason="needs Linux CPU affinity")


@pytest.fixture(scope="module")
def one_core_edge():
    """An edge whose threads all run on one CPU: its diffusion SR and light SR must share
    it, on any machine, as they share the cores of a small CPU edge."""
    import torch

    mine, torch_threads = os.sched_getaffinity(0), torch.get_num_threads()
    os.sched_setaffinity(0, {min(mine)})  # threads started from here on inherit it
    try:  # one torch thread: the SR worker's own, pinned (torch's pool may predate the pin)
        server = BackgroundEdge(EdgeConfig(port=0, preset="tiny", rate_per_s=0,
                                           torch_threads=1, light_threads=1)).start()
    finally:
        os.sched_setaffinity(0, mine)
    yield server
    server.stop()
    torch.set_num_threads(torch_threads)  # process-wide: the next tests' edges get it back


def _sr_calls(server) -> float:
    with urllib.request.urlopen(f"{server.http_url}/metrics") as resp:
        lines = resp.read().decode().splitlines()
    return next(float(ln.rsplit(" ", 1)[1]) for ln in lines
                if ln.startswith("hybridsr_sr_batch_tiles_count"))


def test_the_edge_knows_how_much_its_sr_workers_slow_each_other_before_any_job(one_core_edge):
    costs = one_core_edge.app[EDGE_KEY].costs
    # Sharing one core, each runs at about half speed while the other computes.
    assert costs.sr_beside_light > 1.3
    assert costs.light_beside_sr > 1.3


async def test_the_start_up_measurements_stay_out_of_the_job_metrics(one_core_edge):
    costs = one_core_edge.app[EDGE_KEY].costs
    assert _sr_calls(one_core_edge) == 0  # start-up SR calls are not jobs' calls
    assert costs.spread == EdgeCosts().spread  # nor did they teach the per-call spread
    async with AsyncHybridClient(one_core_edge.url, benchmark=False) as client:
        result = await client.generate("a lighthouse", width=128, height=128, seed=1,
                                       policy="edge-diffusion-all")
    diffusion = sum(t.method == "diffusion" for t in result.plan.tiles)
    assert diffusion > 0 and _sr_calls(one_core_edge) >= 1  # a job's calls do count


def test_only_calls_wholly_beside_the_other_worker_teach_the_slow_down():
    sr = [(0.0, 1.0), (1.0, 2.2)]
    light = [(0.0, 0.3), (0.3, 0.6), (0.6, 0.9), (0.9, 1.2), (1.2, 1.5), (1.5, 1.8),
             (1.8, 2.1), (2.1, 2.6)]  # the last one ran on alone for 0.4 s of 0.5: left out
    seconds, share = mean_beside(light, sr)
    assert seconds == pytest.approx(0.3) and share == pytest.approx(1.0)
    seconds, share = mean_beside(sr, light)
    assert seconds == pytest.approx(1.1) and share == pytest.approx(1.0)
    assert mean_beside([(0.0, 1.0)], [(0.0, 0.5)]) is None  # half beside: not a sample
