"""Auth, TLS, rate limits, busy retries, cancel, metrics and graceful shutdown, for real."""

from __future__ import annotations

import asyncio
import datetime
import json
import signal
import ssl
import time
import urllib.error
import urllib.request

import pytest
from edgeproc import free_port, start_edge

from hybridsr.sdk import AsyncHybridClient, EdgeRefused
from hybridsr.sdk.client import client_ssl_context
from hybridsr.server import BackgroundEdge, EdgeConfig

TOKEN = "s3cret-token"


def _config(**overrides) -> EdgeConfig:
    fields = dict(port=0, preset="tiny", rate_per_s=0, profile_on_start=False)
    return EdgeConfig(**{**fields, **overrides})


def _self_signed(tmp_path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.fixture(scope="module")
def secure_edge(tmp_path_factory):
    cert, key = _self_signed(tmp_path_factory.mktemp("tls"))
    with BackgroundEdge(_config(token=TOKEN, tls_cert=cert, tls_key=key)) as edge:
        edge.cert = cert
        yield edge


async def test_tls_and_token(secure_edge):
    ssl_context = client_ssl_context(secure_edge.cert)
    assert secure_edge.url.startswith("wss://")
    async with AsyncHybridClient(secure_edge.url, token=TOKEN, ssl=ssl_context,
                                 benchmark=False) as client:
        result = await client.generate("over tls", width=128, height=128, seed=1)
    assert result.image.size == (128, 128)


@pytest.mark.parametrize("token", [None, "wrong", TOKEN[:-1], TOKEN + "x"])
async def test_wrong_or_missing_token_is_refused(secure_edge, token):
    ssl_context = client_ssl_context(secure_edge.cert)
    with pytest.raises(EdgeRefused) as info:
        async with AsyncHybridClient(secure_edge.url, token=token, ssl=ssl_context,
                                     benchmark=False):
            pass
    assert info.value.code == "unauthorized"


async def test_untrusted_certificate_is_refused(secure_edge):
    from hybridsr.sdk import EdgeUnavailable

    with pytest.raises(EdgeUnavailable):
        async with AsyncHybridClient(secure_edge.url, token=TOKEN, benchmark=False):
            pass


def test_http_endpoints_need_the_token_but_healthz_does_not(secure_edge):
    context = ssl.create_default_context(cafile=secure_edge.cert)
    with urllib.request.urlopen(f"{secure_edge.http_url}/healthz", context=context) as resp:
        assert json.load(resp)["status"] == "ok"
    for path in ("/metrics", "/v1/generate"):
        req = urllib.request.Request(f"{secure_edge.http_url}{path}",
                                     method="POST" if "generate" in path else "GET", data=None)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, context=context)
        assert info.value.code == 401
    req = urllib.request.Request(f"{secure_edge.http_url}/metrics",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, context=context) as resp:
        assert b"hybridsr_jobs_total" in resp.read()


async def test_rate_limit_then_client_backs_off_and_succeeds():
    # 1 job/s: the first job (well under 1 s, even on a loaded machine) leaves no token.
    with BackgroundEdge(_config(rate_per_s=1.0, rate_burst=1)) as edge:
        async with AsyncHybridClient(edge.url, benchmark=False, retries=0) as impatient:
            await impatient.generate("one", width=128, height=128)
            with pytest.raises(EdgeRefused) as info:
                await impatient.generate("two", width=128, height=128)
            assert info.value.code == "rate_limited" and info.value.retry_after_s > 0
        async with AsyncHybridClient(edge.url, benchmark=False, retries=4) as patient:
            results = [await patient.generate(f"p{i}", width=128, height=128) for i in range(3)]
        assert all(r.image.size == (128, 128) for r in results)


async def test_busy_edge_makes_clients_retry_with_backoff():
    with BackgroundEdge(_config(max_jobs=1)) as edge:
        async with AsyncHybridClient(edge.url, benchmark=False, retries=0) as a, \
                AsyncHybridClient(edge.url, benchmark=False, retries=0) as b:
            first = asyncio.create_task(a.generate("slow", width=512, height=512))
            await asyncio.sleep(0.05)
            with pytest.raises(EdgeRefused) as info:
                await b.generate("second", width=128, height=128)
            assert info.value.code == "busy"
            await first
        async with AsyncHybridClient(edge.url, benchmark=False, retries=6) as a, \
                AsyncHybridClient(edge.url, benchmark=False, retries=6) as b:
            results = await asyncio.gather(a.generate("x", width=256, height=256),
                                           b.generate("y", width=256, height=256))
        assert [r.image.size for r in results] == [(256, 256)] * 2


async def test_cancel_stops_the_job_and_frees_its_slot(any_edge):
    async with AsyncHybridClient(any_edge.url, benchmark=False) as client:
        task = asyncio.create_task(client.generate("cancel me", width=1024, height=1024,
                                                   policy="edge-diffusion-all"))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{any_edge.http_url}/healthz") as resp:
                if json.load(resp)["active_jobs"] == 0:
                    break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the cancelled job kept its slot")
        # A 1024² edge-diffusion-all job takes seconds; a cancelled one frees the slot at once.
        assert time.monotonic() < deadline
        with urllib.request.urlopen(f"{any_edge.http_url}/metrics") as resp:
            metrics = resp.read().decode()
        assert 'hybridsr_jobs_total{outcome="cancelled"}' in metrics


def test_metrics_count_jobs_tiles_and_stages(any_edge):
    async def one():
        async with AsyncHybridClient(any_edge.url, benchmark=False) as client:
            return await client.generate("m", width=256, height=192, policy="edge-diffusion-all")

    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(f"{any_edge.http_url}/metrics") as resp:
            lines = resp.read().decode().splitlines()
        return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
                for ln in lines if ln and not ln.startswith("#")}

    before = scrape()
    result = asyncio.run(one())
    after = scrape()
    assert len(result.plan.tiles) == 6
    key = 'hybridsr_jobs_total{outcome="done"}'
    assert after[key] == before.get(key, 0) + 1
    tiles = 'hybridsr_tiles_total{destination="edge-diffusion"}'
    assert after[tiles] == before.get(tiles, 0) + 6
    count = 'hybridsr_stage_seconds_count{stage="t2i"}'
    assert after[count] == before.get(count, 0) + 1
    assert "hybridsr_queue_depth{worker=\"sr\"}" in after


async def test_sigterm_drains_running_jobs_and_refuses_new_ones():
    port = free_port()
    proc = await asyncio.to_thread(start_edge, port, "--sr-batch", "1", "--log-format", "json",
                                   "--rate", "0")
    try:
        url = f"ws://127.0.0.1:{port}"
        async with AsyncHybridClient(url, benchmark=False, retries=0) as client:
            signalled = asyncio.Event()

            def on_progress(event) -> None:
                if event.stage == "tiles" and not signalled.is_set():
                    proc.send_signal(signal.SIGTERM)
                    signalled.set()

            # 768² with one tile per SR call: 64 edge tiles, seconds of work left to drain.
            running = asyncio.create_task(client.generate(
                "finish me", width=768, height=768, policy="edge-diffusion-all",
                on_progress=on_progress))
            await signalled.wait()
            await asyncio.sleep(0.3)
            with pytest.raises(EdgeRefused) as info:
                await client.generate("too late", width=128, height=128)
            assert info.value.code == "shutting_down" and info.value.retry_after_s
            assert not running.done()
            result = await running
        assert not result.degraded, result.degraded_reason
        assert set(result.destinations.values()) == {"edge"}
        assert proc.wait(timeout=60) == 0
        logs = [json.loads(line) for line in proc.stderr.read().decode().splitlines()
                if line.startswith("{")]
        assert any(entry.get("job_id") == result.plan.job_id for entry in logs)
    finally:
        proc.kill()
        proc.wait()


async def test_reattaching_restarts_the_resume_window():
    """Left at t≈0, back at 0.6 s, left again at 0.8 s: the job must outlive t=1 s."""
    import aiohttp

    from hybridsr.protocol import (
        PROTOCOL_VERSION,
        WEBSOCKET_PATH,
        DeviceProfile,
        Generate,
        Hello,
        decode,
        encode,
    )

    profile = DeviceProfile(cores=1, memory_total_mb=1, memory_available_mb=1)
    request = Generate(job_id="window", prompt="long", width=1024, height=1024, seed=1,
                       policy="edge-diffusion-all")

    async def visit(url: str, stay_s: float, until: str | None = None) -> list:
        async with aiohttp.ClientSession() as http, \
                http.ws_connect(url + WEBSOCKET_PATH, max_msg_size=0) as ws:
            await ws.send_bytes(encode(Hello(protocol_version=PROTOCOL_VERSION,
                                             device=profile)))
            await ws.receive()
            await ws.send_bytes(encode(request))
            frames, deadline = [], time.monotonic() + stay_s
            while time.monotonic() < deadline or until is not None:
                msg = await ws.receive(timeout=60)
                frame = decode(msg.data, 1 << 30)
                frames.append(frame)
                if until is not None and frame.type in ("done", "error"):
                    break
            return frames

    with BackgroundEdge(_config(resume_window_s=1.0, sr_batch=1)) as edge:
        first = await visit(edge.url, 0.05)
        await asyncio.sleep(0.55)
        second = await visit(edge.url, 0.2)
        await asyncio.sleep(0.5)  # the first departure's window has run out by now
        third = await visit(edge.url, 0, until="end")
    assert first[0].type == "accepted" and not first[0].resumed
    assert second[0].type == "accepted" and second[0].resumed
    assert third[0].resumed and third[-1].type == "done", third[-1]


async def test_a_session_cannot_cancel_another_sessions_job(edge):
    async with AsyncHybridClient(edge.url, benchmark=False) as owner, \
            AsyncHybridClient(edge.url, benchmark=False) as stranger:
        job = asyncio.create_task(owner.generate("mine", width=512, height=512,
                                                 job_id="not-yours", policy="split-edge"))
        await asyncio.sleep(0.3)
        from hybridsr.protocol import Cancel

        await stranger.connection.send(Cancel(job_id="not-yours"))
        result = await job
    assert not result.degraded and result.plan.job_id == "not-yours"


def test_sync_client_after_close_and_bad_arguments():
    import threading

    from hybridsr.sdk import HybridClient, HybridSRError

    threads = threading.active_count()
    with pytest.raises(ValueError):
        HybridClient("ws://127.0.0.1:9", device_sr="nope")
    assert threading.active_count() == threads  # no loop thread left behind
    client = HybridClient("ws://127.0.0.1:9", benchmark=False)
    client.close()
    with pytest.raises(HybridSRError, match="closed"):
        client.generate("after close")


async def test_finished_results_are_kept_within_the_memory_cap():
    from hybridsr.server.edge import EDGE_KEY

    with BackgroundEdge(_config(result_cache_mb=0.3, result_ttl_s=600)) as edge:
        async with AsyncHybridClient(edge.url, benchmark=False) as client:
            ids = [(await client.generate(f"cap {i}", width=256, height=256, seed=i,
                                          policy="edge-diffusion-all")).plan.job_id
                   for i in range(4)]
        state = edge.app[EDGE_KEY]
        kept = [i for i in ids if i in state.jobs]
        assert 1 <= len(kept) < 4 and kept == ids[-len(kept):]  # the newest survive
        assert state._finished_bytes <= 0.3 * 2**20 or len(kept) == 1
