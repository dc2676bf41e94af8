"""The policy benchmark runs end to end on a tiny job.

Why: it reads the edge's measured costs after its runs, a path no other test takes; a field
removed from the edge broke it while every other test passed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_policies_benchmark_writes_its_runs_and_the_measured_profile(tmp_path):
    out = tmp_path / "policies.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "policies.py"), "--size", "128",
           "--prompts", "1", "--seeds", "1", "--links", "lan", "--policies", "hybrid",
           "--no-sim", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert "partial" not in report
    [run] = report["runs"]
    assert run["policy"] == "hybrid" and run["latency_s"] > 0 and run["predicted_total_s"] > 0
    assert report["profile"]["bytes_per_px"] > 0
    assert set(report["meta"]["codecs"]) >= {"png", "jpeg-q95"}
