"""The device side stays light: protocol, sdk and client never import torch or diffusers."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module", ["hybridsr.protocol", "hybridsr.sdk", "hybridsr.client.cli"]
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
