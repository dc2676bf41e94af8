"""Edge light SR on torch: same weights as onnxruntime, same pixels (CPU here, CUDA on a GPU)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from hybridsr.imaging.lightsr import RealESRGANSR
from hybridsr.sdk import AsyncHybridClient
from hybridsr.server import BackgroundEdge, EdgeConfig
from hybridsr.server.edge import EDGE_KEY
from hybridsr.server.torchsr import TorchLightSR, create_edge_light, cuda_available

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import photo_like  # noqa: E402


@pytest.fixture(scope="module")
def runtimes() -> tuple[TorchLightSR, RealESRGANSR]:
    return TorchLightSR(device="cpu"), RealESRGANSR(threads=1)


@pytest.mark.parametrize(("w", "h", "scale"), [(30, 26, 4), (28, 24, 2), (20, 22, 3)])
def test_torch_matches_onnxruntime(runtimes, w: int, h: int, scale: int) -> None:
    torch_sr, ort_sr = runtimes
    image = photo_like(w, h, seed=scale)
    ours, reference = torch_sr.upscale(image, scale), ort_sr.upscale(image, scale)
    assert ours.shape == reference.shape == (h * scale, w * scale, 3)
    assert np.abs(ours.astype(int) - reference).max() <= 1


def test_a_batch_equals_one_crop_at_a_time(runtimes) -> None:
    torch_sr, _ = runtimes
    crops = [photo_like(24, 24, seed=i) for i in range(3)] + [photo_like(20, 28, seed=9)]
    batch = torch_sr.upscale_batch(crops, 4)
    for crop, hr in zip(crops, batch, strict=True):
        assert np.array_equal(hr, torch_sr.upscale(crop, 4))


def test_auto_picks_torch_only_with_cuda() -> None:
    chosen = create_edge_light("auto", "cuda" if cuda_available() else "cpu", 1)
    assert isinstance(chosen, TorchLightSR) == cuda_available()
    assert isinstance(create_edge_light("torch", "cpu"), TorchLightSR)
    assert not isinstance(create_edge_light("onnxruntime", "cpu", 1), TorchLightSR)
    with pytest.raises(ValueError, match="unknown edge light runtime"):
        create_edge_light("ncnn", "cpu")


async def test_edge_light_tiles_in_batches_on_torch_equal_the_devices_sr() -> None:
    config = EdgeConfig(port=0, preset="tiny", rate_per_s=0, edge_light_runtime="torch",
                        light_batch=4, profile_on_start=False)
    with BackgroundEdge(config) as edge:
        async with AsyncHybridClient(edge.url, benchmark=False,
                                     tile_quality="lossless") as client:
            result = await client.generate("light", width=256, height=256, seed=9,
                                           policy="edge-light-all")
            whole = client.backend.upscale(np.asarray(result.lr_image), 4)
        assert "torch" in edge.app[EDGE_KEY].backend.info().light
    assert set(result.destinations.values()) == {"edge"}
    diff = np.abs(np.asarray(result.image).astype(int) - whole.astype(int))
    assert diff.max() <= 1
