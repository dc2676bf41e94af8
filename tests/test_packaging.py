"""The built wheel holds every module: what `pip install hybridsr` gives a user.

The suite itself runs on an editable install, which maps the source folders directly and so
cannot notice a package missing from `pyproject.toml`. A wheel without
`hybridsr.imaging.realesrgan` made the device SR fall back to Lanczos on a fresh GPU host.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"protocol": "hybridsr/protocol", "imaging": "hybridsr/imaging", "sdk": "hybridsr/sdk",
           "server": "hybridsr/server", "client": "hybridsr/client"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the sources (setuptools writes `build/` beside them)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in SOURCES:
        shutil.copytree(ROOT / folder, src / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-cache-dir", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (built,) = out.glob("hybridsr-*.whl")
    return built


def test_wheel_holds_every_source_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"{target}/{path.relative_to(ROOT / folder).as_posix()}"
        for folder, target in SOURCES.items()
        for path in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert "hybridsr/imaging/realesrgan/upscaler.py" in expected  # the walk above found them
    missing = sorted(expected - names)
    assert not missing, f"modules missing from the wheel: {missing}"


def test_installed_wheel_runs_real_esrgan(wheel, tmp_path):
    """Installed from the wheel alone (no editable finder), `auto` device SR is Real-ESRGAN."""
    target = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
         "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # `-S` skips site-packages' .pth files, and with them the editable install's finder;
    # the dependencies are then reached through plain path entries after the wheel's copy.
    deps = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    paths = [str(target), *dict.fromkeys(deps)]
    code = (
        f"import sys; sys.path[:0] = {paths!r}\n"
        "import hybridsr.imaging.lightsr as d\n"
        f"assert d.__file__.startswith({str(target)!r}), d.__file__\n"
        "print(d.create_backend('auto', 1).name)\n"
    )
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "realesr-animevideov3", proc.stderr[-2000:]
