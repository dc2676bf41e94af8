"""Enhance every picture dropped into a folder: through the edge when it is there, on this
device alone (Real-ESRGAN compact) when it is not. Made for a Raspberry Pi with a camera or
a shared folder; runs anywhere the device SDK installs (`pip install hybridsr`).

    python enhance_folder.py --inbox ~/inbox --outbox ~/enhanced --edge ws://edge.local:8765

Each picture `NAME.EXT` becomes `NAME_x4.png` (PNG keeps alpha) and `NAME_x4.json` (where it
was done, timings, the SDK's notes). A picture that cannot be taken (animated, unreadable)
gets `NAME.error.txt` instead and is not tried again. After the edge fails, the program
works alone for `--retry` seconds before it tries the edge again. See `hybridsr-watch.service`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from hybridsr.imaging.lightsr import DeviceSR, create_backend
from hybridsr.imaging.resample import resize
from hybridsr.sdk import EdgeRefused, EdgeUnavailable, HybridClient
from hybridsr.sdk.errors import UnsupportedImage
from hybridsr.sdk.inputs import prepare_image, upscale_alpha

log = logging.getLogger("enhance_folder")
SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


@dataclass
class Outcome:
    source: str
    output: str | None
    where: str  # "edge" | "edge (degraded)" | "device" | "rejected"
    seconds: float
    notes: list[str]


class FolderEnhancer:
    """One pass at a time over `inbox`; the edge connection is kept between pictures."""

    def __init__(self, inbox: Path, outbox: Path, edge: str, *, scale: int = 4,
                 device_sr: str | DeviceSR = "auto", retry_s: float = 60.0,
                 settle_s: float = 1.0, token: str | None = None) -> None:
        self.inbox, self.outbox, self.edge = Path(inbox), Path(outbox), edge
        self.scale, self.retry_s, self.settle_s, self.token = scale, retry_s, settle_s, token
        self.backend = create_backend(device_sr) if isinstance(device_sr, str) else device_sr
        self.client: HybridClient | None = None
        self.edge_away_until = 0.0  # monotonic time before which the edge is not tried

    def output_of(self, source: Path) -> Path:
        return self.outbox / f"{source.stem}_x{self.scale}.png"

    def pending(self) -> list[Path]:
        """Pictures not done yet and not being written (unchanged for `settle_s`)."""
        now = time.time()
        found = []
        for path in sorted(self.inbox.iterdir()):
            if path.suffix.lower() not in SUFFIXES or not path.is_file():
                continue
            done = self.output_of(path).exists() or self._error_file(path).exists()
            if not done and now - path.stat().st_mtime >= self.settle_s:
                found.append(path)
        return found

    def run_once(self) -> list[Outcome]:
        self.outbox.mkdir(parents=True, exist_ok=True)
        return [self.enhance(path) for path in self.pending()]

    def enhance(self, source: Path) -> Outcome:
        started = time.perf_counter()
        try:
            prepared = prepare_image(source)
        except UnsupportedImage as exc:
            self._error_file(source).write_text(f"{exc}\n")
            log.warning("%s: %s", source.name, exc)
            return Outcome(str(source), None, "rejected", time.perf_counter() - started,
                           [str(exc)])
        if time.monotonic() >= self.edge_away_until:
            try:
                return self._via_edge(source, prepared, started)
            except (EdgeUnavailable, EdgeRefused) as exc:
                log.warning("edge unavailable (%s): working alone for %.0f s", exc,
                            self.retry_s)
                self._drop_client()
                self.edge_away_until = time.monotonic() + self.retry_s
        return self._on_device(source, prepared, started)

    def _via_edge(self, source: Path, prepared, started: float) -> Outcome:
        if self.client is None:
            client = HybridClient(self.edge, device_sr=self.backend, token=self.token,
                                  connect_timeout=5.0, retries=1)
            try:
                client.connect()
            except BaseException:
                client.close()
                raise
            self.client = client
        result = self.client.enhance(prepared, scale=self.scale)
        where = "edge (degraded)" if result.degraded else "edge"
        notes = [*result.notes, *([result.degraded_reason] if result.degraded_reason else [])]
        return self._save(source, result.image, where, started, notes)

    def _on_device(self, source: Path, prepared, started: float) -> Outcome:
        """The whole picture by this device's SR: what the edge would have left it anyway."""
        model_scale = self.scale
        try:
            rgb = self.backend.upscale(prepared.rgb, model_scale)
        except ValueError:  # an x4-only model: x4, then resized down
            model_scale = 4
            rgb = self.backend.upscale(prepared.rgb, model_scale)
        w, h = prepared.size
        size = (w * self.scale, h * self.scale)
        image = Image.fromarray(resize(rgb, *size))
        if prepared.grey:
            image = image.convert("L")
        if prepared.alpha is not None:
            alpha = Image.fromarray(upscale_alpha(prepared.alpha, model_scale, self.backend,
                                                  size))
            image.putalpha(alpha)
        notes = [*prepared.notes, f"edge away: done on this device with {self.backend.name}"]
        return self._save(source, image, "device", started, notes)

    def _save(self, source: Path, image: Image.Image, where: str, started: float,
              notes: list[str]) -> Outcome:
        output = self.output_of(source)
        partial = output.with_suffix(".part.png")
        image.save(partial)
        partial.replace(output)  # a reader never sees half a picture
        outcome = Outcome(str(source), str(output), where, time.perf_counter() - started, notes)
        output.with_suffix(".json").write_text(json.dumps(asdict(outcome), indent=1) + "\n")
        log.info("%s → %s (%s, %.1f s)", source.name, output.name, where, outcome.seconds)
        return outcome

    def _error_file(self, source: Path) -> Path:
        return self.outbox / f"{source.name}.error.txt"

    def _drop_client(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            try:
                client.close()
            except Exception:
                pass

    def close(self) -> None:
        self._drop_client()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inbox", type=Path, required=True)
    parser.add_argument("--outbox", type=Path, required=True)
    parser.add_argument("--edge", default="ws://127.0.0.1:8765")
    parser.add_argument("--token", default=os.environ.get("HYBRIDSR_TOKEN"),
                        help="bearer token for the edge (default: $HYBRIDSR_TOKEN)")
    parser.add_argument("--scale", type=int, default=4, choices=(2, 3, 4))
    parser.add_argument("--device-sr", default="auto", help="auto (Real-ESRGAN compact), lanczos")
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between looks")
    parser.add_argument("--retry", type=float, default=60.0,
                        help="seconds to work alone after the edge failed")
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    enhancer = FolderEnhancer(args.inbox, args.outbox, args.edge, scale=args.scale,
                              device_sr=args.device_sr, retry_s=args.retry, token=args.token)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))  # systemd stop
    try:
        while not stopping:
            enhancer.run_once()
            if args.once:
                break
            time.sleep(args.poll)
    except KeyboardInterrupt:
        pass
    finally:
        enhancer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
