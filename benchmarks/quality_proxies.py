"""Quality proxies of one hybrid result that need no reference image (policies.py's rows)."""

from __future__ import annotations

import math
import statistics

import numpy as np

from hybridsr.sdk.result import HybridResult


def quality(result: HybridResult) -> dict[str, float | None]:
    """Three proxies, none of which needs a reference image.

    - `salient_enhanced`: of the LR area covered by salient tiles (score ≥ the plan's
      threshold), the share covered by tiles that got diffusion SR. None: no salient tile.
    - `lr_psnr_db`: PSNR of the output box-downscaled by the scale (mean of each s×s block)
      against the LR image, in dB: how faithful the upscale is to what it upscaled.
    - `seam`: mean absolute luma step (0..255) across the HR lines where a tile starts or ends
      (tile edges x·s and (x+w)·s, rows likewise, image borders excluded) minus the mean step
      across all other lines. About 0: no visible tile borders; positive: seams.
    """
    plan = result.plan
    s = plan.scale
    lr = np.asarray(result.lr_image.convert("RGB"), dtype=np.float64)
    hr = np.asarray(result.image.convert("RGB"), dtype=np.float64)
    h, w = lr.shape[:2]
    salient = np.zeros((h, w), bool)
    diffused = np.zeros((h, w), bool)
    for t in plan.tiles:
        if t.score >= plan.threshold:
            salient[t.y : t.y + t.h, t.x : t.x + t.w] = True
        if t.method == "diffusion":
            diffused[t.y : t.y + t.h, t.x : t.x + t.w] = True
    share = float((salient & diffused).sum() / salient.sum()) if salient.any() else None
    down = hr[: h * s, : w * s].reshape(h, s, w, s, 3).mean(axis=(1, 3))
    mse = float(np.mean((down - lr) ** 2))
    psnr = 10 * math.log10(255**2 / mse) if mse > 0 else math.inf
    luma = hr @ np.array([0.299, 0.587, 0.114])
    steps_x = np.abs(np.diff(luma, axis=1)).mean(axis=0)  # step between column c-1 and c
    steps_y = np.abs(np.diff(luma, axis=0)).mean(axis=1)
    seam = _border_excess(steps_x, {t.x * s for t in plan.tiles} | {(t.x + t.w) * s
                                                                    for t in plan.tiles})
    seam_y = _border_excess(steps_y, {t.y * s for t in plan.tiles} | {(t.y + t.h) * s
                                                                      for t in plan.tiles})
    parts = [v for v in (seam, seam_y) if v is not None]
    return {"salient_enhanced": None if share is None else round(share, 4),
            "lr_psnr_db": round(psnr, 3),
            "seam": round(statistics.fmean(parts), 4) if parts else None}


def _border_excess(steps: np.ndarray, borders: set[int]) -> float | None:
    """Mean step at the borders minus elsewhere; `steps[c - 1]` is the step into line c."""
    inside = sorted(c - 1 for c in borders if 0 < c < len(steps) + 1)
    if not inside:
        return None
    mask = np.zeros(len(steps), bool)
    mask[inside] = True
    return float(steps[mask].mean() - steps[~mask].mean()) if (~mask).any() else None
