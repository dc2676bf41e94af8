"""Shared fixtures: a real tiny-preset edge on 127.0.0.1, started once per test session."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The device's measured SR speed is cached per user; tests keep theirs to themselves.
os.environ.setdefault("HYBRIDSR_PROFILE_CACHE", os.path.join(
    tempfile.mkdtemp(prefix="hybridsr-tests-"), "device-profile.json"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def edge_config(**overrides):
    from hybridsr.server import EdgeConfig

    return EdgeConfig(port=0, preset="tiny", max_frame_bytes=2 * 1024 * 1024,
                      max_prompt_chars=200, max_width=1024, max_height=1024,
                      max_image_pixels=512 * 512, rate_per_s=0, **overrides)


@pytest.fixture(scope="session")
def edge():
    """A real edge server (aiohttp + tiny random diffusers pipelines) on a free port."""
    from hybridsr.server import BackgroundEdge

    with BackgroundEdge(edge_config()) as server:
        yield server


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray instance (and Serve, no HTTP proxy) for the whole test session."""
    import ray
    from ray import serve

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20,
             log_to_driver=False, configure_logging=False)
    serve.start(proxy_location="Disabled")
    yield ray
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_edge(ray_cluster):
    """The same edge with its models in one Ray Serve replica (`--backend ray`)."""
    from hybridsr.server import BackgroundEdge

    # replica_cpus=0: a replica reserves no CPU of the 2 this session gives Ray
    with BackgroundEdge(edge_config(backend="ray", ray_address="local", replica_cpus=0,
                                    sr_batch_wait_ms=20)) as server:
        yield server


@pytest.fixture(params=["local", "ray"])
def any_edge(request):
    """Run a test against both backends: the same test body, the same assertions."""
    return request.getfixturevalue("edge" if request.param == "local" else "ray_edge")


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A 64x64 photo-like LR image: smooth gradient background, one textured object."""
    y, x = np.mgrid[0:64, 0:64].astype(np.float32)
    img = np.stack([60 + x, 80 + y, 120 + 0.5 * (x + y)], axis=-1)
    rng = np.random.default_rng(3)
    disk = (x - 44) ** 2 + (y - 20) ** 2 < 12**2
    img[disk] = rng.integers(0, 256, size=(int(disk.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8)
