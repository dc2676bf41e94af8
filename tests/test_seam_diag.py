"""The seam diagnosis classes each tile border by the tiles on its two sides.

Why: `benchmarks/seam_diag.py` is how the hybrid's seam score was traced to (or cleared of)
heavy-heavy, heavy-light and light-light borders; a step charged to the wrong class would
point the next fix at the wrong part of the pipeline.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
seam_diag = pytest.importorskip("seam_diag")

S = 4


def plan_with_heavy_left_column() -> object:
    """64² LR in 32-px tiles (starts 0, 24, 32); the tiles at x = 0 heavy, the rest light."""
    lr = np.zeros((64, 64, 3), np.uint8)
    plan = seam_diag.make_plan(lr, 2.0)  # no score reaches 2: every tile light
    tiles = [t.model_copy(update={"method": "diffusion", "destination": "edge"}) if t.x == 0
             else t for t in plan.tiles]
    return plan.model_copy(update={"tiles": tiles})


@pytest.mark.parametrize(("where", "expected"), [
    ("x", "LL"),   # LR line x = 56: light tiles on both sides
    ("x24", "HL"),  # LR line x = 24: the heavy column ends beyond it, a light tile starts
    ("y", "HH"),   # LR line y = 24 across the heavy column only: heavy on both sides
])
def test_a_step_on_one_kind_of_border_is_charged_to_that_kind(where, expected):
    plan = plan_with_heavy_left_column()
    rng = np.random.default_rng(0)
    base = rng.integers(120, 131, size=(64 * S, 64 * S, 3)).astype(np.int16)
    stepped = base.copy()
    if where == "x":
        stepped[:, 56 * S :] += 40
    elif where == "x24":
        stepped[:, 24 * S :] += 40
    else:
        stepped[24 * S :, : 20 * S] += 40
    before = seam_diag.border_classes(base.clip(0, 255).astype(np.uint8), plan)
    after = seam_diag.border_classes(stepped.clip(0, 255).astype(np.uint8), plan)
    for name in seam_diag.CLASSES:
        change = after[name] - before[name]
        if name == expected:
            assert change > 5, (name, change)
        else:
            assert abs(change) < 1, (name, change)
