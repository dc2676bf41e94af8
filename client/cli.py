"""`hybridsr`: generate, enhance, probe and demo from the command line.

The client stack (aiohttp, pydantic, the SDK) is imported only by the commands that talk
to an edge: `upscale` starts in a fraction of the time (see client/upscale.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hybridsr.imaging.lightsr import BACKENDS, REALESRGAN_MODELS
from hybridsr.imaging.realesrgan.runtime import PRECISIONS, RUNTIMES
from hybridsr.protocol.policies import DEFAULT_POLICY, POLICIES, TILE_QUALITIES

if TYPE_CHECKING:
    from hybridsr.client.progress import ProgressBar
    from hybridsr.sdk import HybridResult

PROG = "hybridsr"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line instead of usage + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"expected a scale of at least 1, got {text}")
    return int(value) if value.is_integer() else value


def _model_name(text: str) -> str:
    if text in (*REALESRGAN_MODELS, "lanczos") or text.endswith((".pth", ".onnx")):
        return text
    raise argparse.ArgumentTypeError(
        f"unknown model {text!r}: use {', '.join(REALESRGAN_MODELS)}, lanczos, "
        "or a Real-ESRGAN .pth/.onnx file"
    )


def _job_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--edge", action="append", metavar="URL",
                   help="edge URL (ws://HOST:PORT); repeat for several edges "
                        "(default: ws://127.0.0.1:8765)")
    # = hybridsr.sdk.edges.SELECTIONS, not imported here: `upscale` loads no client stack.
    p.add_argument("--select", default="fastest",
                   choices=("fastest", "first-available", "round-robin"),
                   help="how to pick among several edges (default: fastest, by quote)")
    p.add_argument("--token", default=os.environ.get("HYBRIDSR_TOKEN"),
                   help="bearer token for the edge (default: $HYBRIDSR_TOKEN)")
    p.add_argument("--ca", help="CA or self-signed certificate (PEM) to trust for wss://")
    p.add_argument("--policy", default=DEFAULT_POLICY, choices=POLICIES)
    p.add_argument("--seed", type=int)
    p.add_argument("--threshold", type=float, help="saliency threshold for edge tiles (0..1)")
    p.add_argument("--device-sr", default="auto", choices=BACKENDS)
    _runtime_args(p)
    p.add_argument("--color-fix", default="wavelet", choices=("wavelet", "adain", "none"))
    p.add_argument("--tile-quality", default="high", choices=TILE_QUALITIES,
                   help="lossless: PNG tiles always; high/balanced: the edge may send JPEG/WebP "
                        "tiles (about 41/38 dB) when the link is the bottleneck")
    p.add_argument("-o", "--output", type=Path, default=Path("out.png"))
    p.add_argument("--report", type=Path, help="write the job report (JSON) here")
    p.add_argument("--html", type=Path,
                   help="write a self-contained results page (before/after, plan, timings)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", default="auto", choices=RUNTIMES,
                   help="device SR runtime (auto: measured once per device, then cached)")
    p.add_argument("--precision", default="exact", choices=PRECISIONS,
                   help="exact: float32; fast: the measured fastest of float32, bf16/f16 "
                        "(OpenVINO) and int8 (>= 40 dB from exact)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Edge/device hybrid text-to-image and SR.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = sub.add_parser("generate", help="text → high-resolution image")
    gen.add_argument("prompt")
    gen.add_argument("--negative", default="")
    gen.add_argument("--width", type=_positive, default=512)
    gen.add_argument("--height", type=_positive, default=512)
    gen.add_argument("--steps", type=_positive)
    gen.add_argument("--scale", type=_positive)
    _job_args(gen)

    enh = sub.add_parser("enhance", help="super-resolve an existing image")
    enh.add_argument("input", type=Path)
    enh.add_argument("--scale", type=_scale,
                     help="1 up to the edge's largest, e.g. 2 or 2.5 (default: the largest)")
    enh.add_argument("--prompt", default="")
    _job_args(enh)

    up = sub.add_parser("upscale", help="super-resolve an image locally, no edge")
    up.add_argument("input", type=Path)
    up.add_argument("-o", "--output", type=Path, default=Path("out.png"))
    up.add_argument("--model", default="realesr-animevideov3", type=_model_name,
                    help=f"{', '.join(REALESRGAN_MODELS)}, lanczos, or a .pth/.onnx file")
    up.add_argument("--scale", type=_positive, default=4)
    up.add_argument("--threads", type=_positive, help="onnxruntime threads (default: cores)")
    up.add_argument("--tile", type=_positive,
                    help="tile size in input pixels (default: from the available memory)")
    _runtime_args(up)
    up.add_argument("-q", "--quiet", action="store_true")

    probe = sub.add_parser("probe", help="print this device's profile as JSON")
    probe.add_argument("--device-sr", default="auto", choices=BACKENDS)
    _runtime_args(probe)
    probe.add_argument("--no-benchmark", action="store_true")
    probe.add_argument("--remeasure", action="store_true",
                       help="benchmark the device SR now, ignoring (and refreshing) the cache")

    demo = sub.add_parser("demo", help="run an edge in-process and one job, offline")
    demo.add_argument("--out", type=Path, default=Path("demo-out"))
    demo.add_argument("--preset", default="tiny", help="edge preset (default: tiny, offline)")
    demo.add_argument("--prompt", default=None)
    demo.add_argument("--width", type=_positive, default=512)
    demo.add_argument("--height", type=_positive, default=512)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--policy", default=DEFAULT_POLICY, choices=POLICIES)
    demo.add_argument("--device-sr", default="auto", choices=BACKENDS)
    demo.add_argument("--photo", type=Path,
                      help="photo to enhance x4 on the realesrgan preset (default: "
                           "scikit-image's astronaut, downscaled x4 first)")
    demo.add_argument("--no-photo", action="store_true", help="only the text-to-image job")
    demo.add_argument("-q", "--quiet", action="store_true")
    return parser


def _summary(result: HybridResult) -> str:
    t = result.timings
    n_edge = sum(1 for d in result.destinations.values() if d == "edge")
    text = (f"{result.image.width}x{result.image.height} from {result.lr_image.width}x"
            f"{result.lr_image.height} (x{result.plan.scale}, {result.plan.steps} steps); "
            f"tiles: {n_edge} edge / {len(result.destinations) - n_edge} device; "
            f"total {t.total:.2f}s (t2i {t.t2i:.2f}, edge SR {t.edge_sr:.2f}, "
            f"device SR {t.device_sr:.2f}, stitch {t.stitch:.2f}, transfer {t.transfer:.2f})")
    if result.moved:
        text += f"\nedges: {' → '.join(result.edges)} ({'; '.join(result.moves)})"
    if result.degraded:
        text += f"\nDEGRADED: {result.degraded_reason}"
    if result.random_weights:
        text += "\nnote: the edge uses random weights (tiny preset): the image is noise-like"
    for note in result.notes:
        text += f"\nnote: {note}"
    return text


def _write(result: HybridResult, output: Path, report: Path | None,
           html: Path | None = None, title: str = "") -> None:
    from hybridsr.sdk import HybridSRError

    try:
        result.image.save(output)
        if report is not None:
            result.save_report(report)
        if html is not None:
            from hybridsr.client.page import write_page

            write_page(result, html, title=title)
    except (OSError, ValueError) as exc:
        raise HybridSRError(f"cannot write output: {exc}") from None


async def _demo(args: argparse.Namespace, bar: ProgressBar) -> int:
    """The T2I job (random weights), then a real photo enhanced with real weights."""
    from hybridsr.client.demo import DEFAULT_PROMPT, demo_photo, run_demo, run_photo_demo
    from hybridsr.sdk.client import load_image

    result = await run_demo(
        args.out, preset=args.preset, prompt=args.prompt or DEFAULT_PROMPT,
        width=args.width, height=args.height, seed=args.seed, policy=args.policy,
        device_sr=args.device_sr, on_progress=bar,
    )
    bar.close()
    print(_summary(result), file=sys.stderr)
    print(f"wrote final.png, lr.png, plan.png, report.json, generate.html to "
          f"{args.out.resolve()}")
    if args.no_photo:
        return 0
    if args.photo is not None:
        photo, credit, truth = load_image(args.photo), "", False
    else:
        found = demo_photo()
        if found is None:
            print("no photo job: scikit-image is not installed (pip install scikit-image, "
                  "or pass --photo PATH)", file=sys.stderr)
            return 0
        (photo, credit), truth = found, True
    result = await run_photo_demo(args.out, photo, credit=credit, ground_truth=truth,
                                  policy=args.policy, device_sr=args.device_sr,
                                  on_progress=bar)
    bar.close()
    print(_summary(result), file=sys.stderr)
    print(f"wrote the photo job to {(args.out / 'photo').resolve()}; open "
          f"{(args.out / 'index.html').resolve()}")
    return 0


async def _run(args: argparse.Namespace) -> int:
    import json
    import time

    from hybridsr.client.progress import ProgressBar
    from hybridsr.imaging.lightsr import create_backend
    from hybridsr.sdk import AsyncHybridClient, probe_device
    from hybridsr.sdk.client import client_ssl_context
    from hybridsr.sdk.inputs import prepare_image
    from hybridsr.sdk.probe import benchmark_backend
    from hybridsr.sdk.profile_cache import profile_cache

    bar = ProgressBar(enabled=not getattr(args, "quiet", False) and sys.stderr.isatty())
    try:
        if args.command == "probe":
            backend = create_backend(args.device_sr, runtime=args.runtime,
                                     precision=args.precision)
            cache = profile_cache()
            if args.remeasure and cache is not None and not args.no_benchmark:
                cache.put(backend, benchmark_backend(backend))  # measured now, then kept
            profile = probe_device(backend, benchmark=not args.no_benchmark,
                                   cache=cache or False)
            print(json.dumps(profile.model_dump(), indent=2))
            entry = cache.get(backend) if cache is not None and not args.no_benchmark else None
            if entry is not None:
                print(f"SR speed: {entry.source}, {time.time() - entry.measured_at:.0f} s old, "
                      f"kept in {cache.path}", file=sys.stderr)
            return 0
        if args.command == "demo":
            return await _demo(args, bar)
        ssl = client_ssl_context(args.ca) if args.ca else None
        # Read (and refuse) the input before connecting: a bad file costs no edge time.
        image = prepare_image(args.input) if args.command == "enhance" else None
        edges = args.edge or ["ws://127.0.0.1:8765"]
        async with AsyncHybridClient(edges=edges, selection=args.select,
                                     device_sr=args.device_sr, token=args.token, ssl=ssl,
                                     color_fix=args.color_fix, runtime=args.runtime,
                                     precision=args.precision,
                                     tile_quality=args.tile_quality) as client:
            if args.command == "generate":
                result = await client.generate(
                    args.prompt, width=args.width, height=args.height, seed=args.seed,
                    negative_prompt=args.negative, policy=args.policy, steps=args.steps,
                    scale=args.scale, threshold=args.threshold, on_progress=bar,
                )
            else:
                result = await client.enhance(
                    image, scale=args.scale, prompt=args.prompt, seed=args.seed,
                    policy=args.policy, threshold=args.threshold, on_progress=bar,
                )
        bar.close()
        title = (f"hybridsr: “{args.prompt}”" if args.command == "generate"
                 else f"hybridsr: {args.input.name} enhanced")
        _write(result, args.output, args.report, args.html, title)
        print(_summary(result), file=sys.stderr)
        print(args.output)
        return 0
    finally:
        bar.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "upscale":
        from hybridsr.client.upscale import UpscaleError, run_upscale

        try:
            return run_upscale(args)
        except UpscaleError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 1
        except ValueError as exc:  # e.g. a scale the model does not do
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
    import asyncio

    from hybridsr.sdk import HybridSRError, InvalidEdgeURL

    try:
        return asyncio.run(_run(args))
    except InvalidEdgeURL as exc:  # a usage error, like a bad flag
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except HybridSRError as exc:
        print(f"{PROG}: error: {' '.join(str(exc).splitlines())}", file=sys.stderr)  # one line
        return 1
    except ValueError as exc:  # e.g. a malformed edge URL
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
