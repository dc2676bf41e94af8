"""The device's measured SR speed is kept per device, model and runtime: a second start does
not benchmark again; a stale entry, another model or another runtime does."""

from __future__ import annotations

import json
import time

import numpy as np

from hybridsr.client.cli import main
from hybridsr.imaging.lightsr import LanczosSR, RealESRGANSR
from hybridsr.sdk import AsyncHybridClient, probe_device
from hybridsr.sdk.profile_cache import ProfileCache, runtime_key


class CountingLanczos(LanczosSR):
    """Real Lanczos SR that counts its calls: a benchmark is what makes calls at start-up."""

    def __init__(self) -> None:
        self.calls = 0

    def upscale(self, image: np.ndarray, scale: int) -> np.ndarray:
        self.calls += 1
        return super().upscale(image, scale)


class CountingESRGAN(RealESRGANSR):
    calls = 0

    def upscale(self, image: np.ndarray, scale: int) -> np.ndarray:
        self.calls += 1
        return super().upscale(image, scale)


def test_second_probe_uses_the_cache(tmp_path):
    cache = ProfileCache(tmp_path / "profile.json")
    backend = CountingLanczos()
    first = probe_device(backend, cache=cache)
    measured = backend.calls
    assert measured > 0 and first.sr_ms_per_lr_pixel > 0
    again = probe_device(backend, cache=ProfileCache(tmp_path / "profile.json"))
    assert backend.calls == measured  # nothing re-measured
    assert again.sr_ms_per_lr_pixel == first.sr_ms_per_lr_pixel
    probe_device(backend, cache=False)
    assert backend.calls > measured  # without the cache it measures every time


def test_a_stale_entry_is_measured_again(tmp_path):
    path = tmp_path / "profile.json"
    backend = CountingLanczos()
    probe_device(backend, cache=ProfileCache(path))
    data = json.loads(path.read_text())
    (entry,) = data.values()
    entry["measured_at"] -= 8 * 24 * 3600  # a week and a day ago
    path.write_text(json.dumps(data))
    calls = backend.calls
    probe_device(backend, cache=ProfileCache(path))
    assert backend.calls > calls
    (entry,) = json.loads(path.read_text()).values()
    assert time.time() - entry["measured_at"] < 60 and entry["source"] == "benchmark"


def test_another_model_or_runtime_is_measured_separately(tmp_path):
    cache = ProfileCache(tmp_path / "profile.json")
    lanczos = CountingLanczos()
    probe_device(lanczos, cache=cache)
    esrgan = CountingESRGAN()
    probe_device(esrgan, cache=cache)
    assert esrgan.calls > 0  # a different model: its own benchmark
    calls = esrgan.calls
    probe_device(esrgan, cache=cache)
    assert esrgan.calls == calls
    one_thread = CountingESRGAN(threads=1)
    assert runtime_key(one_thread) != runtime_key(esrgan)
    probe_device(one_thread, cache=cache)
    assert one_thread.calls > 0  # a different runtime setting: measured too
    assert len(json.loads(cache.path.read_text())) == 3


async def test_real_jobs_refresh_the_entry_and_the_next_start_does_not_measure(
        edge, tmp_path, photo, monkeypatch):
    path = tmp_path / "profile.json"
    monkeypatch.setenv("HYBRIDSR_PROFILE_CACHE", str(path))
    backend = CountingLanczos()
    async with AsyncHybridClient(edge.url, device_sr=backend) as client:
        assert backend.calls > 0  # first start: measured
        (before,) = json.loads(path.read_text()).values()
        await client.enhance(photo, policy="device-light-all")
    (after,) = json.loads(path.read_text()).values()
    assert before["source"] == "benchmark" and after["source"] == "job" and after["jobs"] == 1
    assert after["measured_at"] > before["measured_at"]
    assert after["sr_ms_per_lr_pixel"] != before["sr_ms_per_lr_pixel"]
    restarted = CountingLanczos()
    async with AsyncHybridClient(edge.url, device_sr=restarted) as client:
        assert client.profile.sr_ms_per_lr_pixel == after["sr_ms_per_lr_pixel"]
    assert restarted.calls == 0  # the app's second start did not benchmark


def test_cli_probe_measures_once_and_remeasure_refreshes(tmp_path, monkeypatch, capsys):
    path = tmp_path / "profile.json"
    monkeypatch.setenv("HYBRIDSR_PROFILE_CACHE", str(path))

    def probe(*extra: str) -> tuple[dict, float]:
        assert main(["probe", "--device-sr", "lanczos", *extra]) == 0
        printed = json.loads(capsys.readouterr().out)
        (entry,) = json.loads(path.read_text()).values()
        return printed, entry["measured_at"]

    first, t1 = probe()
    second, t2 = probe()
    assert t2 == t1 and second["sr_ms_per_lr_pixel"] == first["sr_ms_per_lr_pixel"]
    _, t3 = probe("--remeasure")
    assert t3 > t1
