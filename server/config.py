"""Edge daemon settings, with the defaults an operator gets from `hybridsr-edge serve`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EdgeConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    preset: str = "tiny"
    t2i_model: str | None = None  # overrides the preset's T2I model id or directory
    sr_model: str | None = None  # overrides the preset's upscaler model id or directory
    backend: str = "local"  # where the models run: "local" (this process) or "ray"
    device: str = "auto"  # "cpu", "cuda", "cuda:1", or "auto"
    torch_threads: int | None = None  # CPU threads for the pipelines (None: torch's default)
    light_threads: int | None = None  # onnxruntime threads for edge light SR (None: default)
    edge_light_runtime: str = "auto"  # torch | onnxruntime | auto (torch where CUDA is)
    light_batch: int = 0  # edge light-SR crops per call (0: 16 on torch, else 1)
    max_jobs: int = 16  # accepted and unfinished jobs, over all sessions; beyond it: `busy`
    max_frame_bytes: int = 32 * 1024 * 1024
    max_prompt_chars: int = 1000
    max_width: int = 4096
    max_height: int = 4096
    max_image_pixels: int = 4096 * 4096
    tile: int = 32  # LR tile size
    overlap: int = 8  # LR overlap between neighbouring tiles
    sr_batch: int = 4  # edge tiles per diffusion-SR pipeline call
    sr_batch_wait_ms: float = 5.0  # how long a batch waits for tiles of other jobs
    cross_job_batching: bool = True  # tiles of different jobs may share one SR call
    ray_address: str | None = None  # ray backend: "local" (start Ray here) or a cluster address
    ray_app: str | None = None  # ray backend: attach to this app (`hybridsr-edge deploy`)
    replicas: int = 1  # ray backend: model replicas (one GPU each where there are GPUs)
    min_replicas: int | None = None  # ray backend: autoscaling bounds (default: `replicas`)
    max_replicas: int | None = None
    replica_cpus: float = 1.0  # ray backend: CPUs each replica reserves
    threshold: float = 0.5  # saliency score at or above which a tile is foreground
    profile_on_start: bool = True  # time one T2I step and one SR tile at start-up
    token: str | None = None  # when set, clients must send `Authorization: Bearer <token>`
    tls_cert: str | None = None  # PEM certificate chain: serve wss:// and https://
    tls_key: str | None = None
    rate_per_s: float = 5.0  # job submissions per second per client address (token bucket)
    rate_burst: int = 20
    quote_rate_per_s: float = 20.0  # quotes per second per client address (own bucket)
    quote_burst: int = 60
    drain_timeout_s: float = 60.0  # on SIGTERM: how long running jobs may take to finish
    resume_window_s: float = 30.0  # a running job nobody is attached to is cancelled after
    result_ttl_s: float = 60.0  # a finished job's frames stay for a reconnecting client
    result_cache_mb: float = 64.0  # … but no more than this in all: oldest dropped first
