"""The `hybridsr` and `hybridsr-edge` commands as a user runs them, in subprocesses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from PIL import Image

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_connection_is_one_clear_line():
    proc = run("hybridsr.client", "generate", "x", "--edge", f"ws://127.0.0.1:{_free_port()}")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot connect to edge" in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["generate", "x", "--width", "-5"], "positive integer"),
        (["generate", "x", "--policy", "nope"], "invalid choice"),
        (["enhance", "x.png", "--runtime", "tensorrt"], "invalid choice"),
        (["upscale", "x.png", "--precision", "int4"], "invalid choice"),
        (["enhance"], "required"),
        (["generate", "x", "--edge", "ftp://host:1"], "edge URL"),
    ],
)
def test_invalid_arguments_are_one_clear_line(args, needle):
    proc = run("hybridsr.client", *args)
    assert proc.returncode in (1, 2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("backend", ["auto", "lanczos"])
def test_probe_prints_the_device_profile(backend):
    proc = run("hybridsr.client", "probe", "--device-sr", backend)
    assert proc.returncode == 0, proc.stderr
    profile = json.loads(proc.stdout)
    expected = "realesr-animevideov3" if backend == "auto" else "lanczos"
    assert profile["cores"] >= 1 and profile["sr_backend"] == expected
    assert profile["sr_ms_per_lr_pixel"] > 0


def test_generate_and_enhance_against_a_running_edge(edge, tmp_path, photo):
    out, report = tmp_path / "out.png", tmp_path / "report.json"
    proc = run("hybridsr.client", "generate", "a boat", "--edge", edge.url, "--width", "128",
               "--height", "96", "--seed", "3", "-o", str(out), "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    assert Image.open(out).size == (128, 96)
    data = json.loads(report.read_text())
    assert data["policy"] == "hybrid" and data["degraded"] is False
    assert {"t2i", "transfer", "device_sr", "edge_sr", "stitch", "total"} <= set(data["timings"])
    assert len(data["plan"]["tiles"]) == len(data["destinations"])

    Image.fromarray(photo).save(tmp_path / "in.png")
    proc = run("hybridsr.client", "enhance", str(tmp_path / "in.png"), "--edge", edge.url,
               "--scale", "4", "-o", str(out), "--report", str(report),
               "--runtime", "onnxruntime", "--precision", "fast", "--tile-quality", "lossless")
    assert proc.returncode == 0, proc.stderr
    assert Image.open(out).size == (256, 256)
    data = json.loads(report.read_text())
    edge_tiles = {k for k, v in data["destinations"].items() if v == "edge"}
    assert data["tile_codec"] == "png" and set(data["tile_wire"]) == edge_tiles
    assert all(w["codec"] == "png" and w["bytes"] > 0 for w in data["tile_wire"].values())
    proc = run("hybridsr.client", "enhance", str(tmp_path / "in.png"), "--edge", edge.url,
               "--tile-quality", "lossy-please")
    assert proc.returncode == 2 and "--tile-quality" in proc.stderr


def test_enhance_missing_file_is_one_line(edge, tmp_path):
    proc = run("hybridsr.client", "enhance", str(tmp_path / "nope.png"), "--edge", edge.url)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("hybridsr: error: cannot read image")


def test_demo_writes_its_files(tmp_path):
    from tests.synthetic import photo_like

    small = tmp_path / "small.png"  # the photo job on a small picture: a few x4plus tiles
    Image.fromarray(photo_like(40, 40, seed=2)).save(small)
    out = tmp_path / "out"
    proc = run("hybridsr.client", "demo", "--out", str(out), "--width", "128",
               "--height", "128", "--photo", str(small), timeout=300)
    assert proc.returncode == 0, proc.stderr
    for name in ("final.png", "lr.png", "plan.png", "report.json", "generate.html",
                 "index.html", "photo/final.png", "photo/report.json"):
        assert (out / name).exists(), name
    assert "random" in proc.stderr.lower()  # says plainly that the weights are random
    assert str(out) in proc.stdout
    assert Image.open(out / "final.png").size == (128, 128)
    report = json.loads((out / "report.json").read_text())
    assert report["random_weights"] is True
    photo = json.loads((out / "photo" / "report.json").read_text())
    assert photo["random_weights"] is False and photo["edge"]["preset"] == "realesrgan"
    assert Image.open(out / "photo" / "final.png").size == (160, 160)


def test_edge_daemon_refuses_a_busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = run("hybridsr.server", "serve", "--port", str(port), "--log-level", "ERROR")
    assert proc.returncode == 1
    assert "cannot listen" in proc.stderr and "Traceback" not in proc.stderr


def test_upscale_locally_matches_the_sdk_model(tmp_path, photo):
    import numpy as np

    from hybridsr.imaging.realesrgan import RealESRGAN

    Image.fromarray(photo[:40, :56]).save(tmp_path / "in.png")
    proc = run("hybridsr.client", "upscale", str(tmp_path / "in.png"), "-o",
               str(tmp_path / "out.png"), "--scale", "3", "--tile", "24")
    assert proc.returncode == 0, proc.stderr
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == (120, 168, 3)
    whole = RealESRGAN("realesr-animevideov3", scale=3, tile=0).upscale(photo[:40, :56])
    assert np.abs(out.astype(int) - whole.astype(int)).max() <= 1


def test_upscale_refuses_an_impossible_scale_in_one_line(tmp_path, photo):
    Image.fromarray(photo).save(tmp_path / "in.png")
    proc = run("hybridsr.client", "upscale", str(tmp_path / "in.png"), "--model",
               "realesrgan-x4plus", "--scale", "2")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "x4" in proc.stderr


def test_upscale_rejects_an_unknown_model_and_a_missing_checkpoint(tmp_path, photo):
    Image.fromarray(photo).save(tmp_path / "in.png")
    proc = run("hybridsr.client", "upscale", str(tmp_path / "in.png"), "--model", "nope")
    assert proc.returncode == 2 and "unknown model" in proc.stderr
    proc = run("hybridsr.client", "upscale", str(tmp_path / "in.png"), "--model",
               str(tmp_path / "missing.pth"))
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "cannot load" in proc.stderr and "Traceback" not in proc.stderr


def _png_header_only(path, width: int, height: int) -> None:
    """A PNG that claims a huge size: Pillow refuses it from the header alone."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


@pytest.mark.parametrize("command", ["upscale", "enhance"])
def test_decompression_bomb_input_is_one_line(tmp_path, command):
    _png_header_only(tmp_path / "bomb.png", 40000, 40000)
    args = [command, str(tmp_path / "bomb.png")]
    if command == "enhance":
        args += ["--edge", "ws://127.0.0.1:9"]
    proc = run("hybridsr.client", *args)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "cannot read image" in proc.stderr
