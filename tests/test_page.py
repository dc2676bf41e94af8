"""The results page: written by the CLI for a real job, opened in real headless Chromium.

The page must render offline with every picture decoded (its own inline script writes each
<img>'s natural width into the DOM once loaded) and must reference nothing outside itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (`make test` installs Debian's chromium when "
                    "run as root; otherwise: apt-get install chromium)")
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    profile.mkdir()
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def page(edge, tmp_path_factory) -> Path:
    """A 256x256 hybrid job on the tiny edge, through `hybridsr generate --html`."""
    out = tmp_path_factory.mktemp("page")
    proc = subprocess.run(
        [sys.executable, "-m", "hybridsr.client", "generate", "a red lighthouse", "--edge",
         edge.url, "--width", "256", "--height", "256", "--seed", "5", "--device-sr",
         "lanczos", "-q", "-o", str(out / "out.png"), "--html", str(out / "page.html")],
        capture_output=True, text=True, timeout=180, env=ENV)
    assert proc.returncode == 0, proc.stderr
    return out / "page.html"


def test_page_is_self_contained(page: Path) -> None:
    text = page.read_text()
    refs = re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', text)
    assert refs and all(r.startswith("data:image/") for r in refs), refs[:3]
    assert not re.search(r"https?://|<link\b|<script\s[^>]*src", text)
    assert "RANDOM weights" in text  # the tiny preset is labelled as such


def test_page_renders_with_its_images_in_chromium(page: Path, tmp_path: Path) -> None:
    proc = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    found = re.search(r'data-image-widths="([^"]*)"', dom)
    assert found, "the page's load handler did not run"
    widths = [int(w) for w in found.group(1).split(",")]
    assert len(widths) >= 5 and all(w > 0 for w in widths), widths
    assert "<svg" in dom and "text-to-image" in dom and "light SR" in dom

    shot = tmp_path / "page.png"
    proc = chromium(tmp_path, "--window-size=1000,2600", "--hide-scrollbars",
                    "--virtual-time-budget=10000", f"--screenshot={shot}", page.as_uri())
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 20  # pictures and text, not a blank or an error page
    keep = os.environ.get("HYBRIDSR_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
