"""One device, several real edges on 127.0.0.1: quotes, selection, fail-over, the error tree."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
from aiohttp import web
from edgeproc import free_port, start_edge

from hybridsr.protocol import (
    PROTOCOL_VERSION,
    WEBSOCKET_PATH,
    Accepted,
    DeviceProfile,
    EdgeLimits,
    EdgeModels,
    EdgeProfile,
    ErrorCode,
    Plan,
    Quote,
    QuoteReply,
    TileSpec,
    Welcome,
    decode,
    encode,
    encode_image,
)
from hybridsr.sdk import (
    AsyncHybridClient,
    EdgeProtocolError,
    EdgeRefused,
    EdgeTimeout,
    EdgeUnavailable,
    HybridSRError,
    InvalidEdgeURL,
    StageTimeouts,
)
from hybridsr.server import BackgroundEdge, EdgeConfig
from hybridsr.server.edge import EDGE_KEY

QUICK = StageTimeouts(accept=10, plan=60, tiles=20, resume=1.0, failover=1.0)
PROFILE = DeviceProfile(cores=2, memory_total_mb=1024, memory_available_mb=512)


def _config(**overrides) -> EdgeConfig:
    fields = dict(port=0, preset="tiny", rate_per_s=0, profile_on_start=False)
    return EdgeConfig(**{**fields, **overrides})


@pytest.fixture(scope="module")
def three():
    """Edges A (at most 2 jobs), B and C, in this process."""
    with BackgroundEdge(_config(max_jobs=2, sr_batch=1)) as a, \
            BackgroundEdge(_config(sr_batch=1)) as b, BackgroundEdge(_config()) as c:
        yield a, b, c


@pytest.fixture(scope="module")
def doomed():
    """Two edge processes, started side by side, for the tests that kill one each."""
    from concurrent.futures import ThreadPoolExecutor

    ports = [free_port(), free_port()]
    with ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(lambda p: start_edge(p, "--rate", "0", "--sr-batch", "1",
                                                   "--log-level", "WARNING"), ports))
    yield [(proc, f"ws://127.0.0.1:{port}") for proc, port in zip(procs, ports, strict=True)]
    for proc in procs:
        proc.kill()
        proc.wait()


def _state(edge: BackgroundEdge):
    return edge.app[EDGE_KEY]


class Load:
    """`n` long jobs on `edge` from another device, running until the block ends."""

    def __init__(self, edge: BackgroundEdge, n: int) -> None:
        self.edge, self.n = edge, n
        self.tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> Load:
        self.client = AsyncHybridClient(self.edge.url, profile=PROFILE, measure_link=False,
                                        retries=0)
        await self.client.connect()
        self.tasks = [asyncio.create_task(self.client.generate(
            f"load {i}", width=1024, height=1024, policy="edge-diffusion-all"))
            for i in range(self.n)]
        while _state(self.edge).active_jobs < self.n:
            await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.close()
        while _state(self.edge).active_jobs:
            await asyncio.sleep(0.02)


def _client(*urls: str, **kwargs) -> AsyncHybridClient:
    return AsyncHybridClient(edges=list(urls), profile=PROFILE, timeouts=QUICK, **kwargs)


# --- quotes --------------------------------------------------------------------------


async def test_a_quote_admits_nothing_and_says_what_the_edge_would_do(three):
    a, b, _ = three
    async with _client(b.url) as client:
        conn = client.connection
        before = (_state(b).active_jobs, _state(b).jobs_completed, len(_state(b).jobs))
        good = await conn.quote(Quote(job_id="q1", width=512, height=512, stats=client.stats))
        odd = await conn.quote(Quote(job_id="q2", width=500, height=512))
        after = (_state(b).active_jobs, _state(b).jobs_completed, len(_state(b).jobs))
    assert good.refusal is None and good.predicted_s > good.predicted_plan_s > 0
    assert good.scale == 4 and good.scales == [4] and good.presets == ["tiny"]
    assert "hybrid" in good.policies
    assert odd.refusal == ErrorCode.BAD_SIZE.value and "multiples" in odd.message
    assert after == before

    async with Load(a, 2):  # A is full: its quote says `busy`, with a hint
        async with _client(a.url) as client:
            full = await client.connection.quote(Quote(job_id="q3", width=256, height=256))
    assert full.refusal == "busy" and full.retry_after_s and full.queue_position == 2


def test_quote_over_http_and_its_bad_requests(three):
    _, b, _ = three

    def post(body: bytes) -> tuple[int, dict]:
        req = urllib.request.Request(f"{b.http_url}/v1/quote", data=body, method="POST")
        try:
            with urllib.request.urlopen(req) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    status, reply = post(json.dumps({"kind": "enhance", "width": 64, "height": 48}).encode())
    assert status == 200 and QuoteReply.model_validate(reply).refusal is None
    assert reply["predicted_s"] > 0 and reply["job_id"].startswith("http-")
    assert post(b"{nope")[1]["code"] == "invalid_message"
    status, reply = post(json.dumps({"width": "512", "height": 512}).encode())
    assert status == 400 and reply["code"] == "invalid_message" and "width" in reply["message"]
    status, reply = post(json.dumps({"width": 512, "height": 512, "policy": "?"}).encode())
    assert status == 200 and reply["refusal"] == "unknown_policy"


async def test_a_quote_takes_no_rate_limit_token():
    with BackgroundEdge(_config(rate_per_s=0.01, rate_burst=1)) as edge:
        async with _client(edge.url, retries=0) as client:
            for i in range(5):
                reply = await client.connection.quote(Quote(job_id=f"r{i}", width=128,
                                                            height=128))
                assert reply.refusal is None
            await client.generate("still allowed", width=128, height=128)
            reply = await client.connection.quote(Quote(job_id="r9", width=128, height=128))
    assert reply.refusal == "rate_limited" and reply.retry_after_s > 0


# --- selection -----------------------------------------------------------------------


async def test_fastest_picks_the_idle_edge_over_a_loaded_one(three):
    a, b, _ = three
    async with Load(a, 2):
        async with _client(a.url, b.url) as client:  # A first: only the quotes favour B
            result = await client.generate("where", width=256, height=256, seed=1)
            quotes = {r.edge.url: r.quote for r in await client.pool.by_quote(
                client.pool.edges, Quote(job_id="x", width=256, height=256), 5.0)}
    assert result.edges == [b.url] and not result.moved and not result.degraded
    assert quotes[a.url].refusal == "busy" or \
        quotes[a.url].predicted_s > quotes[b.url].predicted_s


async def test_three_edges_the_quotes_decide(three):
    a, b, c = three
    # A and B both work, B more (3 jobs, with room for more); C is idle and listed last.
    async with Load(b, 3), Load(a, 1):
        async with _client(a.url, b.url, c.url) as client:
            ranked = await client.pool.by_quote(
                client.pool.edges, Quote(job_id="y", width=256, height=256,
                                         policy="edge-diffusion-all"), 5.0)
            result = await client.generate("three", width=256, height=256, seed=2,
                                           policy="edge-diffusion-all")
    order = [r.edge.url for r in ranked]
    predicted = {r.edge.url: r.quote.predicted_s for r in ranked}
    assert order[0] == c.url and predicted[c.url] < min(predicted[a.url], predicted[b.url])
    assert result.edges == [c.url] and set(result.destinations.values()) == {"edge"}


async def test_round_robin_and_first_available(three):
    _, b, c = three
    async with _client(b.url, c.url, selection="round-robin") as client:
        used = [(await client.generate(f"rr{i}", width=128, height=128)).edges
                for i in range(3)]
    assert used == [[b.url], [c.url], [b.url]]
    async with _client(c.url, b.url, selection="first-available") as client:
        assert (await client.generate("fa", width=128, height=128)).edges == [c.url]


async def test_a_failed_edge_is_backed_off_then_asked_again(three):
    _, b, _ = three
    port = free_port()
    late = f"ws://127.0.0.1:{port}"
    async with _client(late, b.url, selection="first-available") as client:
        first = await client.generate("while down", width=128, height=128)
        backed_off = client.pool.edges[0]
        assert backed_off.failures == 1 and backed_off.retry_at > 0
        with BackgroundEdge(_config(port=port)):
            await asyncio.sleep(max(0.0, backed_off.retry_at - client.pool.now()))
            second = await client.generate("back up", width=128, height=128)
    assert first.edges == [b.url] and second.edges == [late]
    assert backed_off.failures == 0  # it worked: forgiven


# --- fail-over -----------------------------------------------------------------------


async def test_busy_edge_hands_the_same_job_to_the_next_and_it_runs_once(three):
    a, b, _ = three
    async with Load(a, 2):
        async with _client(a.url, b.url, selection="first-available") as client:
            result = await client.generate("moved", width=256, height=256, seed=3,
                                           job_id="moved-once")
        assert "moved-once" not in _state(a).jobs  # refused at admission: nothing ran there
    assert result.plan.job_id == "moved-once" and "moved-once" in _state(b).jobs
    assert result.edges == [a.url, b.url] and result.moved and not result.degraded
    assert "refused (busy) before the plan" in result.moves[0]
    report = result.report()
    assert report["edges"] == [a.url, b.url] and report["moves"] == result.moves


async def test_edge_killed_before_the_plan_moves_the_job_with_its_id(three, doomed):
    _, b, _ = three
    proc, first = doomed[0]
    done_before = _state(b).jobs_completed

    def kill_when_queued(event) -> None:
        if event.stage == "queued" and proc.poll() is None:
            proc.kill()

    async with _client(first, b.url, selection="first-available") as client:
        result = await client.generate("orphan", width=256, height=256, seed=4,
                                       job_id="kept-id", on_progress=kill_when_queued)
    assert proc.wait(timeout=10) != 0
    assert result.plan.job_id == "kept-id" and result.edges == [first, b.url]
    assert "before the plan" in result.moves[0] and not result.degraded
    assert _state(b).jobs_completed == done_before + 1 and "kept-id" in _state(b).jobs


async def test_after_the_plan_the_missing_tiles_go_to_another_edge(three, doomed):
    _, b, _ = three
    proc, first = doomed[1]

    def kill_when_planned(event) -> None:
        if event.stage == "tiles" and proc.poll() is None:
            proc.kill()

    # A slow device (5 ms per LR pixel, a Pi-class SR): the second edge is sooner.
    slow = PROFILE.model_copy(update={"sr_ms_per_lr_pixel": 5.0})
    async with AsyncHybridClient(edges=[first, b.url], selection="first-available",
                                 profile=slow, timeouts=QUICK, tile_quality="lossless") as client:
        result = await client.generate("rescued", width=256, height=256, seed=5,
                                       policy="edge-diffusion-all",
                                       on_progress=kill_when_planned)
    assert proc.wait(timeout=10) != 0
    assert result.edges == [first, b.url] and result.degraded
    assert f"enhanced on {b.url}" in result.degraded_reason
    assert set(result.destinations.values()) == {"edge"}  # no tile fell back to light SR
    # Each rescued tile is the tile the first edge would have sent: same crop, same seed.
    async with _client(b.url, tile_quality="lossless") as client:  # pixels compared below
        whole = await client.generate("rescued", width=256, height=256, seed=5,
                                      policy="edge-diffusion-all")
    diff = np.abs(np.asarray(whole.image, dtype=int) - np.asarray(result.image, dtype=int))
    assert diff.max() <= 2, diff.max()


# --- the error tree ------------------------------------------------------------------


async def test_every_error_is_a_hybridsr_error(three, edge):
    _, b, _ = three
    with pytest.raises(InvalidEdgeURL):
        AsyncHybridClient(edges=["ws://127.0.0.1:1", "ftp://nowhere"])
    with pytest.raises(InvalidEdgeURL):
        AsyncHybridClient(edges=[])
    with pytest.raises(EdgeUnavailable):
        async with _client(f"ws://127.0.0.1:{free_port()}"):
            pass
    async with _client(b.url, retries=0) as client:
        with pytest.raises(EdgeRefused) as info:
            await client.generate("odd", width=100_000, height=128)
        assert info.value.code is ErrorCode.BAD_SIZE
        with pytest.raises(HybridSRError):  # not pydantic's ValidationError
            await client.generate("seed", width=128, height=128, seed=2**70)
    # Several edges that all refuse the request itself: the refusal, not a hang.
    async with _client(b.url, edge.url) as client:
        with pytest.raises(EdgeRefused) as info:
            await client.generate("odd", width=100_000, height=128)
    assert info.value.code is ErrorCode.BAD_SIZE


async def test_a_silent_edge_is_an_edge_timeout():
    async def accept_and_say_nothing(reader, writer) -> None:
        await reader.read()

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(EdgeTimeout):
            async with AsyncHybridClient(f"ws://127.0.0.1:{port}", profile=PROFILE,
                                         connect_timeout=0.5):
                pass
    finally:
        server.close()


async def test_an_undecodable_lr_image_in_the_plan_is_an_edge_protocol_error():
    """A broken edge (not ours: ours cannot send this) plans with an image that is no PNG."""
    limits = EdgeLimits(max_frame_bytes=1 << 20, max_prompt_chars=100, max_width=1024,
                        max_height=1024, size_multiple=8, max_image_pixels=1 << 20,
                        scales=[4], max_queue=1)
    models = EdgeModels(preset="broken", t2i="-", sr="-", sr_backend="upscaler",
                        random_weights=True, device="cpu")
    good = encode_image(np.zeros((32, 32, 3), np.uint8))
    cancelled = []

    async def session(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            message = decode(msg.data)
            if message.type == "hello":
                await ws.send_bytes(encode(Welcome(
                    protocol_version=PROTOCOL_VERSION, server="broken", session_id="s",
                    limits=limits, models=models, profile=EdgeProfile())))
            elif message.type == "generate":
                await ws.send_bytes(encode(Accepted(job_id=message.job_id, queue_position=0)))
                await ws.send_bytes(encode(Plan(
                    job_id=message.job_id, policy="hybrid",
                    lr_image=good.model_copy(update={"data": b"\x89PNG not really"}),
                    lr_width=32, lr_height=32, scale=4, steps=1, tile=32, overlap=0,
                    threshold=0.5, sr_backend="upscaler", random_weights=True,
                    tiles=[TileSpec(index=0, x=0, y=0, w=32, h=32, destination="edge",
                                    score=1.0)])))
            elif message.type == "cancel":
                cancelled.append(message.job_id)
        return ws

    app = web.Application()
    app.router.add_get(WEBSOCKET_PATH, session)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with AsyncHybridClient(f"ws://127.0.0.1:{port}", profile=PROFILE,
                                     measure_link=False) as client:
            with pytest.raises(EdgeProtocolError, match="LR image"):
                await client.generate("x", width=128, height=128, job_id="bad-plan")
            await asyncio.sleep(0.1)
    finally:
        await runner.cleanup()
    assert cancelled == ["bad-plan"]  # the device told the edge to stop


# --- the CLI -------------------------------------------------------------------------


def test_cli_with_two_edges(three, tmp_path):
    _, b, c = three
    dead = f"ws://127.0.0.1:{free_port()}"
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "hybridsr.client", "generate", "two edges", "--edge", dead,
         "--edge", b.url, "--width", "128", "--height", "128", "-o", str(tmp_path / "o.png"),
         "--report", str(report), "--device-sr", "lanczos", "-q"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(report.read_text())["edges"] == [b.url]  # the dead one never took it
    proc = subprocess.run(
        [sys.executable, "-m", "hybridsr.client", "generate", "x", "--edge", dead, "--edge",
         f"ws://127.0.0.1:{free_port()}", "--device-sr", "lanczos", "-q"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "cannot connect" in proc.stderr


# --- cancellation --------------------------------------------------------------------


async def test_cancelling_a_job_as_a_frame_arrives_still_cancels_it():
    """The race behind a flaky cancel test: on Python 3.11 `asyncio.wait_for` returns a frame
    that arrived in the same loop step as the cancellation, and the job went on."""
    from hybridsr.imaging.lightsr import LanczosSR
    from hybridsr.protocol import Generate, Progress
    from hybridsr.sdk.job import DeviceJob

    job = DeviceJob(None, Generate(job_id="c", prompt="", width=128, height=128), LanczosSR())
    job._queue = asyncio.Queue()
    receiving = asyncio.create_task(job._receive("plan"))
    await asyncio.sleep(0)  # waiting on the queue now
    job._queue.put_nowait(Progress(job_id="c", stage="t2i", step=1, total=2))
    receiving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await receiving
