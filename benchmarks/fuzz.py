"""The long fuzz run of the wire protocol: the decoder alone, or a real edge over a WebSocket.

Why: the fast property tests (tests/test_fuzz.py) try a few thousand frames; this tries as
many as you ask, with the same generators (benchmarks/fuzzframes/), and counts what broke.
A frame BROKE when it made `decode`/`decode_image` raise anything but `ProtocolError`, took
longer than --hang-s, failed its round trip, or (--server) when the edge dropped the session,
went quiet, answered something other than the local decoder predicts, or failed a good job.

    python benchmarks/fuzz.py --frames 100000 --seed 0            # decoder only
    python benchmarks/fuzz.py --frames 10000 --seed 0 --server    # a tiny-preset edge
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzzframes as ff  # noqa: E402

from hybridsr.protocol import ErrorCode, encode  # noqa: E402

# The limits of the test edge (tests/conftest.py), so refusals match what the tests see.
MAX_FRAME_BYTES = 2 * 1024 * 1024
MAX_IMAGE_PIXELS = 512 * 512


class Hang(BaseException):
    """Raised by the alarm inside a frame that takes too long (not an `Exception`, so the
    oracle's own `except Exception` cannot mistake it for the decoder's)."""


class Tally:
    """Counts of outcomes, and the first few broken frames with why they broke."""

    def __init__(self, show: int) -> None:
        self.decoder: Counter[str] = Counter()  # "decoded", or the code that refused it
        self.images: Counter[str] = Counter()  # decode_image on the blobs of decoded frames
        self.replies: Counter[str] = Counter()  # --server: what the edge answered
        self.broken: list[tuple[str, bytes]] = []
        self.broke_count = 0
        self.show = show
        self.tried = 0

    def add(self, frame: bytes, local: ff.Verdict, reply: ff.Verdict | None = None) -> None:
        self.tried += 1
        self.decoder["decoded" if local.broke and local.message else local.outcome] += 1
        if reply is not None:
            self.replies[reply.outcome] += 1
        for verdict in (local, reply):
            if verdict is not None and verdict.broke:
                self.broke(verdict.problem, frame)
                break

    def broke(self, problem: str, frame: bytes) -> None:
        self.broke_count += 1
        if len(self.broken) < self.show:
            self.broken.append((problem, frame))

    def report(self, mode: str, seed: int, seconds: float, extra: str = "") -> None:
        refused = {k: v for k, v in self.decoder.items() if k not in ("decoded", ff.BROKE)}
        print(f"hybridsr fuzz: mode={mode} seed={seed}")
        print(f"  tried      {self.tried:>9}")
        print(f"  decoded    {self.decoder['decoded']:>9}")
        print(f"  refused    {sum(refused.values()):>9}")
        for code, count in sorted(refused.items(), key=lambda kv: -kv[1]):
            print(f"    {code:<20} {count:>9}")
        for title, counts in (("decode_image on their blobs", self.images),
                              ("edge replies", self.replies)):
            if counts:
                print(f"  {title}: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
        if extra:
            print(f"  {extra}")
        print(f"  BROKE      {self.broke_count:>9}")
        print(f"  {self.tried / seconds:,.0f} frames/s ({self.tried} in {seconds:.1f} s)")
        for problem, frame in self.broken:
            shown = repr(frame) if len(frame) <= 400 else f"{frame[:400]!r} + ... ({len(frame)} B)"
            print(f"  broke: {problem[:600]}\n    frame = {shown}")


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang


def run_decoder(frames: int, rng: random.Random, tally: Tally, hang_s: float,
                deadline: float) -> None:
    """Every frame through `decode` (and its images through `decode_image`), in process."""
    seeds = [encode(m) for m in ff.seed_messages()]
    signal.signal(signal.SIGALRM, _alarm)
    for _ in range(frames):
        if time.monotonic() > deadline:
            break
        frame = ff.fuzz_frame(rng, seeds, MAX_FRAME_BYTES)
        started = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, hang_s)
        try:
            verdict = ff.check_decode(frame, MAX_FRAME_BYTES)
            for blob in ff.images_of(verdict.message):
                image = ff.check_image(blob, MAX_IMAGE_PIXELS)
                tally.images[image.outcome] += 1
                if image.broke:
                    verdict = ff.Verdict(ff.BROKE, verdict.message, image.problem)
        except Hang:
            verdict = ff.Verdict(ff.BROKE, problem=f"hang: over {hang_s} s")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if verdict.outcome != ff.BROKE and time.perf_counter() - started > hang_s:
            verdict = ff.Verdict(ff.BROKE, problem=f"slow: {time.perf_counter() - started} s")
        tally.add(frame, verdict)


async def run_server(frames: int, rng: random.Random, tally: Tally, url: str,
                     deadline: float, good_every: int) -> int:
    """Frames over one WebSocket session at a time; a new session after one breaks.
    Returns how many good jobs were checked."""
    seeds = [encode(m) for m in ff.client_seed_messages()]
    sent = goods = refusals = 0
    while sent < frames and time.monotonic() < deadline and refusals < 5:
        try:
            session = await ff.FuzzSession(url, MAX_FRAME_BYTES).__aenter__()
            refusals = 0
        except (ff.Broken, OSError) as exc:
            tally.broke(f"could not open a session: {exc}", b"")
            refusals += 1  # five in a row: the edge is gone, stop
            await asyncio.sleep(1.0)
            continue
        try:
            while sent < frames and time.monotonic() < deadline:
                frame = ff.fuzz_frame(rng, seeds, MAX_FRAME_BYTES)
                as_text = rng.random() < 0.01
                local = ff.check_decode(frame, MAX_FRAME_BYTES)
                verdict = await session.send(frame, as_text)
                tally.add(frame, ff.Verdict(ErrorCode.BAD_FRAME.value) if as_text else local,
                          verdict)
                sent += 1
                if verdict.broke:
                    break  # the session may be gone: start a fresh one
                if sent % good_every == 0:
                    goods += 1
                    good = await session.good_job()
                    if good.broke:
                        tally.broke(good.problem, b"")
                        break
        finally:
            await session.__aexit__(None, None, None)
    return goods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--server", action="store_true", help="fuzz a real tiny-preset edge")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="stop after this")
    parser.add_argument("--hang-s", type=float, default=2.0, help="a frame slower hangs")
    parser.add_argument("--good-every", type=int, default=500,
                        help="--server: a good job after this many frames")
    parser.add_argument("--show", type=int, default=5, help="broken frames to print")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    tally = Tally(args.show)
    deadline = time.monotonic() + args.max_seconds
    if not args.server:
        started = time.perf_counter()
        run_decoder(args.frames, rng, tally, args.hang_s, deadline)
        tally.report("decoder", args.seed, time.perf_counter() - started)
    else:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from hybridsr.server import BackgroundEdge, EdgeConfig

        # As tests/conftest.py: no rate limit (where the edge has one), every frame counts.
        no_limit = {"rate_per_s": 0} if "rate_per_s" in EdgeConfig.__dataclass_fields__ else {}
        config = EdgeConfig(port=0, preset="tiny", max_frame_bytes=MAX_FRAME_BYTES,
                            max_prompt_chars=200, max_width=1024, max_height=1024,
                            max_image_pixels=MAX_IMAGE_PIXELS, **no_limit)
        with BackgroundEdge(config) as edge:
            started = time.perf_counter()
            goods = asyncio.run(run_server(args.frames, rng, tally, edge.url, deadline,
                                           args.good_every))
            seconds = time.perf_counter() - started
            final = asyncio.run(_final_good_job(edge.url))
            if final.broke:
                tally.broke(final.problem, b"")
        tally.report("server", args.seed, seconds,
                     f"good 128x128 jobs after fuzzing: {goods + 1} (the last: {final.outcome})")
    if tally.tried < args.frames:
        print(f"  stopped early after {tally.tried} frames (--max-seconds {args.max_seconds}, "
              "or the edge stopped accepting sessions)")
    sys.exit(1 if tally.broke_count else 0)


async def _final_good_job(url: str) -> ff.Verdict:
    try:
        async with ff.FuzzSession(url, MAX_FRAME_BYTES) as session:
            return await session.good_job()
    except (ff.Broken, OSError) as exc:
        return ff.Verdict(ff.BROKE, problem=f"final good job: {exc}")


if __name__ == "__main__":
    main()
