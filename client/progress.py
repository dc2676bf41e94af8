"""A tqdm progress bar fed by the SDK's progress events, on stderr."""

from __future__ import annotations

import sys

from tqdm import tqdm

from hybridsr.sdk.job import ProgressEvent

_LABELS = {"queued": "queued", "t2i": "text-to-image", "edge_sr": "edge SR", "tiles": "tiles"}


class ProgressBar:
    """One bar per stage; a stage's bar closes when the next stage starts."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar: tqdm | None = None
        self._stage: str | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if not self.enabled or event.stage in ("queued", "edge_sr"):
            return
        if event.stage != self._stage:
            self.close()
            self._stage = event.stage
            self._bar = tqdm(total=event.total, desc=_LABELS.get(event.stage, event.stage),
                             unit="step" if event.stage == "t2i" else "tile", leave=False,
                             file=sys.stderr)
        assert self._bar is not None
        self._bar.total = event.total
        self._bar.n = event.done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
