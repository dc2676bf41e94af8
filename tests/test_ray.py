"""The Ray Serve backend on a real local Ray: cross-job batching, cancel, faults, errors.

The e2e, resume and cancel tests of the other files run on this backend too (`any_edge`);
these are the parts only Ray has.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
from conftest import edge_config

from hybridsr.sdk import AsyncHybridClient, EdgeRefused, StageTimeouts
from hybridsr.server import BackgroundEdge
from hybridsr.server.backends import SRTile
from hybridsr.server.models import JobCancelled


def _on_edge_loop(edge, coro):
    """Run a coroutine on the edge's own event loop (where its Ray handle lives)."""
    return asyncio.run_coroutine_threadsafe(coro, edge._loop).result(timeout=120)


def _backend(edge):
    return next(iter(edge.app.values())).backend


def _health(edge) -> dict:
    with urllib.request.urlopen(f"{edge.http_url}/healthz", timeout=10) as resp:
        return json.load(resp)


def test_tiles_of_two_jobs_share_a_batch_and_keep_their_pixels(ray_edge):
    backend = _backend(ray_edge)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    a = [SRTile(c, 4, "job a", "", 10 + i, "a") for i, c in enumerate(crops[:2])]
    b = [SRTile(c, 4, "job b", "", 20 + i, "b") for i, c in enumerate(crops[2:])]

    async def alone_then_together():
        alone = await backend.super_resolve(a)
        before = len((await backend.handle.stats.remote())["batches"])
        together = await asyncio.gather(backend.super_resolve(a), backend.super_resolve(b))
        batches = (await backend.handle.stats.remote())["batches"][before:]
        return alone, together[0], batches

    alone, together, batches = _on_edge_loop(ray_edge, alone_then_together())
    assert (4, 2) in [tuple(x) for x in batches]  # one pipeline call held both jobs' tiles
    for x, y in zip(alone, together, strict=True):
        assert x.shape == (128, 128, 3)
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1


def test_cancelled_job_stops_its_text_to_image_in_the_replica(ray_edge):
    backend = _backend(ray_edge)

    async def cancel_after_first_step():
        cancelled, steps = threading.Event(), []
        t0 = time.perf_counter()

        def on_step(done: int, total: int) -> None:
            steps.append(time.perf_counter() - t0)  # streamed from the replica
            cancelled.set()

        with pytest.raises(JobCancelled):
            await backend.text_to_image("stop", "", 512, 512, 8, 0, on_step, cancelled)
        cancelled_at = time.perf_counter() - t0
        while (await backend.handle.stats.remote())["running"]["t2i"]:
            await asyncio.sleep(0.02)
        return steps, cancelled_at, time.perf_counter() - t0

    steps, cancelled_at, idle_at = _on_edge_loop(ray_edge, cancel_after_first_step())
    first_step = steps[0]
    # The pipeline stopped at its next step, not after the 7 it had left.
    assert cancelled_at - first_step < 0.5
    assert idle_at - cancelled_at < 2 * first_step + 0.5


def test_killed_replica_loses_no_job(ray_edge):
    """Kill a replica holding tiles of running jobs: every job still ends, complete."""
    from hybridsr.server.backends.ray import deploy

    backend = _backend(ray_edge)
    scaled = dataclasses.replace(ray_edge.config, replicas=2)
    first = _on_edge_loop(ray_edge, _replica_pids(backend))
    deploy(scaled, backend.app_name)  # scale the session's app to 2 replicas in place
    try:
        pids = _on_edge_loop(ray_edge, _replica_pids(backend))
        assert len(pids) == 2 and first <= pids  # one added; the loaded one kept its models
        asyncio.run(_kill_a_busy_replica_during_jobs(ray_edge))
    finally:  # back to one replica, without waiting for the extra one to stop
        deploy(ray_edge.config, backend.app_name, wait=False)


def test_front_doors_share_the_replicas_of_a_deployed_app(ray_edge):
    """A second edge attaches to the first one's app (as to one `hybridsr-edge deploy` ran)."""
    app = _backend(ray_edge).app_name
    with BackgroundEdge(edge_config(backend="ray", ray_app=app, profile_on_start=False)) as door:
        assert _health(door)["backend"]["app"] == app

        async def one(edge):
            async with AsyncHybridClient(edge.url, benchmark=False) as client:
                return await client.generate("shared", width=128, height=128, seed=3,
                                             policy="edge-diffusion-all")

        a, b = asyncio.run(one(door)), asyncio.run(one(ray_edge))
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert _backend(door).owns_app is False  # closing the second door left the app running
    assert _health(ray_edge)["backend"]["replicas"] >= 1


def test_serve_backpressure_is_busy_with_a_retry_hint(ray_cluster):
    """A deployment that takes one call and queues one more: Serve refuses the surplus T2I
    calls (`BackPressureError`), their clients get `busy` with a retry hint, the admitted
    jobs finish and the edge keeps serving."""
    from ray import serve

    from hybridsr.server.backends.ray import app_spec
    from hybridsr.server.backends.ray_deployments import build_app

    spec = app_spec(edge_config(replica_cpus=0), gpus=False)
    serve.run(build_app({**spec, "max_ongoing": 1, "max_queued": 1}), name="hybridsr-tight",
              route_prefix=None)
    try:
        with BackgroundEdge(edge_config(backend="ray", ray_app="hybridsr-tight",
                                        profile_on_start=False)) as door:
            outcomes = asyncio.run(_burst(door, 4))
            after = asyncio.run(_burst(door, 1))[0]  # the edge keeps serving
            health = _health(door)
    finally:
        serve.delete("hybridsr-tight", _blocking=False)
    refused = [o for o in outcomes if isinstance(o, EdgeRefused)]
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(refused) + len(done) == len(outcomes), outcomes
    assert refused and done, outcomes
    for exc in refused:  # Serve's refusal, not the edge's own admission (max_jobs)
        assert exc.code == "busy" and "replicas" in exc.message, exc
        assert exc.retry_after_s and exc.retry_after_s > 0
    for r in done + [after]:
        assert not r.degraded and r.image.size == (256, 256)
    assert health["backend"]["inflight"] == {"t2i": 0, "sr": 0, "light": 0}


async def _burst(edge, n: int) -> list:
    """`n` simultaneous jobs from `n` clients; each holds the replica for its whole T2I."""

    async def job(i: int):
        async with AsyncHybridClient(edge.url, benchmark=False) as client:
            return await client.generate(f"crowd {i}", width=256, height=256, seed=i,
                                         steps=8, policy="direct-hr")

    return await asyncio.gather(*(job(i) for i in range(n)), return_exceptions=True)


async def _kill_a_busy_replica_during_jobs(edge) -> None:
    backend = _backend(edge)
    killed: list[int] = []

    async def kill_when_busy() -> None:
        while not killed:
            replies = await backend.handle.broadcast("stats").results_async(
                return_exceptions=True)
            for stats in [r for r in replies if isinstance(r, dict)]:
                if stats["held_tiles"] > 0:
                    os.kill(stats["pid"], signal.SIGKILL)
                    killed.append(stats["pid"])
                    return
            await asyncio.sleep(0.05)

    timeouts = StageTimeouts(accept=30, plan=60, tiles=60, resume=5)
    async with AsyncHybridClient(edge.url, benchmark=False, timeouts=timeouts) as client:
        def job(i: int):
            return client.generate(f"survivor {i}", width=512, height=512, seed=i,
                                   policy="edge-diffusion-all")

        killer = asyncio.create_task(_on_edge_loop_async(edge, kill_when_busy()))
        results = await asyncio.gather(*(job(i) for i in range(3)))
        await killer
        assert killed
        for r in results:  # retried on the other replica: nothing degraded, nothing lost
            assert not r.degraded, r.degraded_reason
            assert set(r.destinations.values()) == {"edge"} and len(r.destinations) == 25
        assert _health(edge)["backend"]["retries"] >= 1
        after = await job(9)  # the edge keeps serving
        assert not after.degraded and after.image.size == (512, 512)


async def _replica_pids(backend) -> set[int]:
    replies = await backend.handle.broadcast("stats").results_async()
    return {r["pid"] for r in replies}


async def _on_edge_loop_async(edge, coro):
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, edge._loop))


def test_serve_without_a_reachable_cluster_is_one_clear_line():
    proc = subprocess.run(
        [sys.executable, "-m", "hybridsr.server", "serve", "--port", "0", "--backend", "ray",
         "--ray-address", "127.0.0.1:1", "--log-level", "ERROR"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1
    assert "cannot reach the Ray cluster at '127.0.0.1:1'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_without_ray_installed_the_error_says_how_to_get_it():
    code = ("import sys; sys.modules['ray'] = None\n"  # as if ray were not installed
            "from hybridsr.server.cli import main\n"
            "sys.exit(main(['serve', '--port', '0', '--backend', 'ray', '--ray-address', "
            "'local', '--log-level', 'ERROR']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1
    assert "pip install 'hybridsr[cluster]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_autoscaling_flags_reach_the_running_deployment(ray_cluster):
    """`--min-replicas/--max-replicas` as Serve applied them, read back from its controller."""
    from ray import serve
    from ray.serve.context import _get_global_client

    from hybridsr.server.backends.ray import deploy
    from hybridsr.server.backends.ray_deployments import DEPLOYMENT
    from hybridsr.server.cli import build_parser
    from hybridsr.server.config import EdgeConfig

    args = build_parser().parse_args(["deploy", "--ray-app", "hybridsr-scale", "--replica-cpus",
                                      "0", "--min-replicas", "1", "--max-replicas", "3"])
    config = EdgeConfig(**{k: v for k, v in vars(args).items()
                           if k in EdgeConfig.__dataclass_fields__})
    deploy(config, "hybridsr-scale", wait=False)
    try:
        for _ in range(100):
            apps = _get_global_client().get_serve_details()["applications"]
            deployment = apps.get("hybridsr-scale", {}).get("deployments", {}).get(DEPLOYMENT)
            if deployment:
                break
            time.sleep(0.1)
    finally:
        serve.delete("hybridsr-scale", _blocking=False)
    applied = deployment["deployment_config"]
    scaling = applied["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (1, 3)
    assert scaling["initial_replicas"] == 1 and applied["ray_actor_options"]["num_cpus"] == 0


def test_the_documented_serve_config_runs_and_a_front_door_attaches(ray_cluster):
    """deploy/serve-config.yaml, deployed as `serve deploy` does (Serve's own schema and
    controller), gives the app a `serve --backend ray --ray-app hybridsr` door serves from."""
    import yaml
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    path = os.path.join(os.path.dirname(__file__), "..", "deploy", "serve-config.yaml")
    with open(path) as f:
        schema = ServeDeploySchema.parse_obj(yaml.safe_load(f))
    (app,) = schema.applications
    _get_global_client().deploy_apps(schema, _blocking=True)
    try:
        with BackgroundEdge(edge_config(backend="ray", ray_app=app.name,
                                        profile_on_start=False)) as door:
            result = asyncio.run(_one_job(door))
            health = _health(door)
    finally:
        from ray import serve

        serve.delete(app.name, _blocking=False)
    assert health["backend"]["app"] == app.name
    assert health["backend"]["replicas"] == app.args["replicas"]
    assert not result.degraded and set(result.destinations.values()) == {"edge"}


async def _one_job(edge):
    async with AsyncHybridClient(edge.url, benchmark=False) as client:
        return await client.generate("from the config", width=128, height=128, seed=5,
                                     policy="edge-diffusion-all")
