"""Dependencies run one way: protocol ← imaging ← sdk ← client, and server uses protocol and
imaging, never sdk. The device side (protocol, imaging, sdk, the CLI) never loads torch."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Which first-party packages each package may import (itself always allowed).
ALLOWED = {
    "protocol": set(),
    "imaging": {"protocol"},
    "sdk": {"protocol", "imaging"},
    "server": {"protocol", "imaging"},
    "client": {"protocol", "imaging", "sdk", "server"},  # server: demo.py only, lazily
}


def _first_party_imports(path: Path) -> set[str]:
    """The `hybridsr.X` packages a module imports, anywhere in it (lazy imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "hybridsr" and len(parts) > 1:
                found.add(parts[1])
    return found


def layering_violations(root: Path = ROOT) -> list[str]:
    bad = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            for target in _first_party_imports(path) - allowed - {package}:
                bad.append(f"{path.relative_to(root)} imports hybridsr.{target}")
    return bad


def test_packages_import_only_downward():
    assert layering_violations() == []


def test_layering_check_can_fail(tmp_path):
    # An sdk import in the server must be caught (it was the rule this check was made for).
    for package in ALLOWED:
        (tmp_path / package).mkdir()
    (tmp_path / "server" / "bad.py").write_text("from hybridsr.sdk.job import DeviceJob\n")
    (tmp_path / "imaging" / "lazy.py").write_text("def f():\n    import hybridsr.sdk\n")
    assert layering_violations(tmp_path) == [
        "imaging/lazy.py imports hybridsr.sdk", "server/bad.py imports hybridsr.sdk",
    ]


def test_only_the_demo_imports_the_server_from_the_client():
    users = [p.name for p in (ROOT / "client").glob("*.py")
             if "server" in _first_party_imports(p)]
    assert users == ["demo.py"]


@pytest.mark.parametrize(
    "module",
    ["hybridsr.protocol", "hybridsr.imaging.lightsr", "hybridsr.imaging.compose",
     "hybridsr.sdk", "hybridsr.client.cli"],
)
def test_device_modules_do_not_import_torch(module):
    code = (f"import sys, {module}; heavy = [m for m in ('torch', 'diffusers', 'transformers') "
            f"if m in sys.modules]; print(','.join(heavy))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_server_does_import_torch():
    # The check above must be able to fail: the edge package does load torch.
    code = "import sys, hybridsr.server.models; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.strip().endswith("True"), proc.stderr


@pytest.mark.parametrize("module, loads_ray", [
    ("hybridsr.server.cli", False),  # the edge, every backend's module included
    ("hybridsr.server.backends.ray", False),  # ray only when that backend starts
    ("hybridsr.server.backends.ray_deployments", True),  # (the check can fail)
])
def test_ray_is_imported_only_by_the_ray_backend_when_it_runs(module, loads_ray):
    code = f"import sys, {module}; print('ray' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(str(loads_ray))


# --- names loaded on first use (protocol/lazy.py) --------------------------------------


@pytest.mark.parametrize("package", ["hybridsr.protocol", "hybridsr.sdk"])
def test_lazy_names_load_on_first_use_and_every_listed_name_exists(package):
    code = (f"import sys, importlib; p = importlib.import_module({package!r}); "
            "before = 'pydantic' in sys.modules; "
            "values = [getattr(p, n) for n in p.__all__]; "
            "print(before, 'pydantic' in sys.modules, all(n in vars(p) for n in p.__all__))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "True"]


def test_lazy_names_refuse_unknown_and_doubly_listed_names():
    import hybridsr.protocol
    import hybridsr.sdk
    from hybridsr.protocol.lazy import lazy_names

    with pytest.raises(AttributeError, match="'hybridsr.sdk' has no attribute 'Nope'"):
        hybridsr.sdk.Nope  # noqa: B018
    with pytest.raises(ImportError):
        from hybridsr.protocol import Nope  # noqa: F401
    assert hybridsr.protocol.Quote is importlib.import_module("hybridsr.protocol.messages").Quote
    with pytest.raises(ValueError, match="'Quote' is listed under both"):
        lazy_names("pkg", {".a": ("Quote",), ".b": ("Quote",)}, {})
