"""`hybridsr-edge serve`: run the edge daemon."""

from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from hybridsr.server.app import create_app
from hybridsr.server.config import EdgeConfig
from hybridsr.server.models import ModelLoadError
from hybridsr.server.presets import PRESETS


def build_parser() -> argparse.ArgumentParser:
    d = EdgeConfig()
    parser = argparse.ArgumentParser(prog="hybridsr-edge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve jobs over WebSocket and HTTP")
    serve.add_argument("--host", default=d.host)
    serve.add_argument("--port", type=int, default=d.port)
    serve.add_argument("--preset", default=d.preset, choices=sorted(PRESETS),
                       help="model preset; 'tiny*' are random-weight offline models")
    serve.add_argument("--t2i", dest="t2i_model", help="T2I model id or local directory")
    serve.add_argument("--sr", dest="sr_model", help="x4 upscaler model id or local directory")
    serve.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N")
    serve.add_argument("--max-jobs", type=int, default=d.max_jobs)
    serve.add_argument("--tile", type=int, default=d.tile, help="LR tile size in pixels")
    serve.add_argument("--overlap", type=int, default=d.overlap)
    serve.add_argument("--sr-batch", type=int, default=d.sr_batch)
    serve.add_argument("--threshold", type=float, default=d.threshold)
    serve.add_argument("--log-level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    fields = {k: v for k, v in vars(args).items() if k in EdgeConfig.__dataclass_fields__}
    config = EdgeConfig(**fields)
    if not 0 <= config.overlap < config.tile:
        print("hybridsr-edge: error: --overlap must be >= 0 and smaller than --tile",
              file=sys.stderr)
        return 2
    try:
        web.run_app(create_app(config), host=config.host, port=config.port,
                    print=lambda s: print(s, file=sys.stderr))
    except ModelLoadError as exc:
        print(f"hybridsr-edge: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"hybridsr-edge: error: cannot listen on {config.host}:{config.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
