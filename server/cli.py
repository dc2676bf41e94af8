"""`hybridsr-edge serve`: run the edge daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import ssl
import sys
import warnings

from aiohttp import web

from hybridsr.server.app import create_app
from hybridsr.server.backends import BACKENDS, BackendStartError
from hybridsr.server.config import EdgeConfig
from hybridsr.server.edge import EDGE_KEY
from hybridsr.server.logs import stderr_logging
from hybridsr.server.models import ModelLoadError
from hybridsr.server.presets import PRESETS
from hybridsr.server.security import server_ssl_context

log = logging.getLogger("hybridsr.server")


def build_parser() -> argparse.ArgumentParser:
    d = EdgeConfig()
    parser = argparse.ArgumentParser(prog="hybridsr-edge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve jobs over WebSocket and HTTP")
    serve.add_argument("--host", default=d.host)
    serve.add_argument("--port", type=int, default=d.port)
    serve.add_argument("--preset", default=d.preset, choices=sorted(PRESETS),
                       help="model preset; 'tiny*' are random-weight offline models, "
                            "'realesrgan' real offline weights (enhance only)")
    serve.add_argument("--t2i", dest="t2i_model", help="T2I model id or local directory")
    serve.add_argument("--sr", dest="sr_model", help="x4 upscaler model id or local directory")
    serve.add_argument("--backend", default=d.backend, choices=BACKENDS,
                       help="where the models run: local (this process) or ray (Serve replicas)")
    serve.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N")
    serve.add_argument("--edge-light-runtime", default=d.edge_light_runtime,
                       choices=("auto", "torch", "onnxruntime"),
                       help="edge light SR: torch (batched; on the GPU where --device is "
                            "cuda), onnxruntime (CPU threads), auto: torch when CUDA is there")
    serve.add_argument("--max-jobs", type=int, default=d.max_jobs)
    serve.add_argument("--tile", type=int, default=d.tile, help="LR tile size in pixels")
    serve.add_argument("--overlap", type=int, default=d.overlap)
    serve.add_argument("--sr-batch", type=int, default=d.sr_batch)
    serve.add_argument("--sr-batch-wait-ms", type=float, default=d.sr_batch_wait_ms,
                       help="how long an SR batch waits for other jobs' tiles")
    serve.add_argument("--no-cross-job-batching", dest="cross_job_batching",
                       action="store_false",
                       help="one job's tiles per SR call (for comparisons)")
    add_ray_arguments(serve, d)
    serve.add_argument("--ray-app", help="ray backend: use this app from `hybridsr-edge deploy` "
                       "instead of deploying one of its own")
    serve.add_argument("--threshold", type=float, default=d.threshold)
    serve.add_argument("--token", default=os.environ.get("HYBRIDSR_TOKEN"),
                       help="require this bearer token (default: $HYBRIDSR_TOKEN)")
    serve.add_argument("--tls-cert", help="PEM certificate chain: serve wss:// and https://")
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.add_argument("--rate", dest="rate_per_s", type=float, default=d.rate_per_s,
                       help="job submissions per second per client address (0: no limit)")
    serve.add_argument("--quote-rate", dest="quote_rate_per_s", type=float,
                       default=d.quote_rate_per_s,
                       help="quotes per second per client address (0: no limit)")
    serve.add_argument("--drain-timeout", dest="drain_timeout_s", type=float,
                       default=d.drain_timeout_s, help="seconds running jobs get on SIGTERM")
    serve.add_argument("--log-level", default="INFO")
    serve.add_argument("--log-format", default="text", choices=("text", "json"))
    deploy = sub.add_parser("deploy", help="run the model replicas on a Ray cluster, shared "
                            "by `serve --backend ray --ray-app NAME` front doors")
    deploy.add_argument("--preset", default=d.preset, choices=sorted(PRESETS))
    deploy.add_argument("--t2i", dest="t2i_model", help="T2I model id or local directory")
    deploy.add_argument("--sr", dest="sr_model", help="x4 upscaler model id or local directory")
    deploy.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N")
    deploy.add_argument("--sr-batch", type=int, default=d.sr_batch)
    deploy.add_argument("--sr-batch-wait-ms", type=float, default=d.sr_batch_wait_ms)
    deploy.add_argument("--max-jobs", type=int, default=d.max_jobs,
                        help="jobs the replicas queue for before refusing (busy)")
    deploy.add_argument("--ray-app", default="hybridsr", help="Serve application name")
    add_ray_arguments(deploy, d)
    deploy.add_argument("--log-level", default="INFO")
    deploy.add_argument("--log-format", default="text", choices=("text", "json"))
    return parser


def add_ray_arguments(parser: argparse.ArgumentParser, d: EdgeConfig) -> None:
    parser.add_argument("--ray-address", default=d.ray_address,
                        help="ray backend: 'local' starts Ray in this process; else the "
                        "cluster's address (host:port, or 'auto' on a cluster node)")
    parser.add_argument("--replicas", type=int, default=d.replicas,
                        help="model replicas (one GPU each where the cluster has GPUs)")
    parser.add_argument("--min-replicas", type=int, help="autoscaling lower bound")
    parser.add_argument("--max-replicas", type=int, help="autoscaling upper bound")
    parser.add_argument("--replica-cpus", type=float, default=d.replica_cpus,
                        help="CPUs each replica reserves")


async def serve(config: EdgeConfig, context: ssl.SSLContext | None) -> None:
    """Serve until SIGTERM/SIGINT, then drain while sessions can still be told why.

    aiohttp's own graceful shutdown stops reading from open connections, so a job submitted
    during it would hang unanswered; draining first lets the edge answer `shutting_down`
    with a retry hint until the running jobs are done.
    """
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False,
                           shutdown_timeout=config.drain_timeout_s + 5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, ssl_context=context)
        await site.start()
        scheme = "wss" if context else "ws"
        print(f"hybridsr-edge: serving on {scheme}://{config.host}:{config.port} "
              f"(preset {config.preset}; SIGTERM drains and stops)", file=sys.stderr)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        edge = app[EDGE_KEY]
        log.info("signal received: draining %d running job(s)", edge.active_jobs)
        if not await edge.drain(config.drain_timeout_s):
            log.warning("drain timeout: %d job(s) still running are cancelled",
                        edge.active_jobs)
    finally:
        await runner.cleanup()


def quiet_model_libraries() -> None:
    """Operators see our log lines, not transformers' torchvision notices or hub deprecations
    (an explicit TRANSFORMERS_VERBOSITY still wins)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=UserWarning, module="huggingface_hub")


def run_deploy(config: EdgeConfig) -> int:
    """`hybridsr-edge deploy`: start (or update) the Serve app, then leave it running."""
    from hybridsr.server.backends.ray import connect, deploy

    if config.ray_address in (None, "local"):
        print("hybridsr-edge: error: deploy needs --ray-address of a running cluster "
              "(`ray start --head`); 'local' would end with this command", file=sys.stderr)
        return 2
    try:
        connect(config.ray_address)
        deploy(config, config.ray_app)
    except BackendStartError as exc:
        print(f"hybridsr-edge: error: {exc}", file=sys.stderr)
        return 1
    print(f"hybridsr-edge: app {config.ray_app!r} running on {config.ray_address}; front "
          f"doors: hybridsr-edge serve --backend ray --ray-address {config.ray_address} "
          f"--ray-app {config.ray_app}", file=sys.stderr)
    return 0


def flag_problem(config: EdgeConfig) -> str | None:
    """What is wrong with `serve`'s flags, in one line (None: nothing)."""
    if not 0 <= config.overlap < config.tile:
        return "--overlap must be >= 0 and smaller than --tile"
    if config.sr_batch < 1 or not 0 <= config.sr_batch_wait_ms <= 10_000:
        return "--sr-batch must be >= 1 and --sr-batch-wait-ms between 0 and 10000"
    return None


def run_serve(config: EdgeConfig) -> int:
    """`hybridsr-edge serve`: serve until a signal; 1 when the edge cannot start."""
    try:
        context = (server_ssl_context(config.tls_cert, config.tls_key)
                   if config.tls_cert else None)
    except (OSError, ssl.SSLError) as exc:
        print(f"hybridsr-edge: error: cannot load TLS certificate: {exc}", file=sys.stderr)
        return 1
    try:
        asyncio.run(serve(config, context))
    except (ModelLoadError, BackendStartError) as exc:
        print(f"hybridsr-edge: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"hybridsr-edge: error: cannot listen on {config.host}:{config.port}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fields = {k: v for k, v in vars(args).items() if k in EdgeConfig.__dataclass_fields__}
    config = EdgeConfig(**fields)
    problem = flag_problem(config) if args.command == "serve" else None
    if problem:
        print(f"hybridsr-edge: error: {problem}", file=sys.stderr)
        return 2
    quiet_model_libraries()
    # Logging is set up for this call only: called in-process (tests, apps), main leaves
    # the caller's logging as it found it instead of logging everything to stderr after.
    with stderr_logging(args.log_level, args.log_format):
        return run_deploy(config) if args.command == "deploy" else run_serve(config)


if __name__ == "__main__":
    sys.exit(main())
