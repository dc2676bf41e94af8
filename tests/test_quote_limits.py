"""Quotes are cheap to ask for but run the planner: their own rate limit, and quiet logs."""

from __future__ import annotations

import logging

from hybridsr.protocol import DeviceProfile, Quote
from hybridsr.sdk import AsyncHybridClient
from hybridsr.server import BackgroundEdge, EdgeConfig

PROFILE = DeviceProfile(cores=2, memory_total_mb=1024, memory_available_mb=512)  # no SR timing


def _config(**overrides) -> EdgeConfig:
    fields = dict(port=0, preset="tiny", rate_per_s=0, profile_on_start=False)
    return EdgeConfig(**{**fields, **overrides})


async def test_quotes_have_their_own_rate_limit_and_fastest_skips_a_refusing_edge():
    with BackgroundEdge(_config(quote_rate_per_s=0.01, quote_burst=2)) as limited, \
            BackgroundEdge(_config()) as other:
        async with AsyncHybridClient(edges=[limited.url, other.url], profile=PROFILE,
                                     retries=0) as client:
            conn = client.connection  # the first edge: the limited one
            replies = [await conn.quote(Quote(job_id=f"q{i}", width=128, height=128))
                       for i in range(3)]
            ranked = await client.pool.by_quote(client.pool.edges,
                                                Quote(job_id="r", width=128, height=128), 5.0)
            result = await client.generate("elsewhere", width=128, height=128)
            # Jobs have a bucket of their own (unlimited here): the limited edge takes one.
            direct = AsyncHybridClient(limited.url, profile=PROFILE, retries=0)
            async with direct:
                alone = await direct.generate("still served", width=128, height=128)
    assert [r.refusal for r in replies[:2]] == [None, None]
    refused = replies[2]
    assert refused.refusal == "rate_limited" and refused.retry_after_s > 0
    assert refused.predicted_s is None and "quotes" in refused.message  # no planner run
    assert [r.edge.url for r in ranked] == [other.url, limited.url]
    assert ranked[1].quote.refusal == "rate_limited"
    assert result.edges == [other.url] and not alone.degraded


async def test_quote_fallbacks_log_at_debug_but_a_jobs_still_warn(caplog):
    with BackgroundEdge(_config()) as edge:
        async with AsyncHybridClient(edge.url, profile=PROFILE, measure_link=False,
                                     retries=0) as client:
            with caplog.at_level(logging.DEBUG, logger="hybridsr.server.costs"):
                for i in range(3):
                    reply = await client.connection.quote(
                        Quote(job_id=f"q{i}", width=128, height=128))
                    assert reply.refusal is None
                quoted = [r for r in caplog.records if r.name == "hybridsr.server.costs"]
                caplog.clear()
                await client.generate("a job", width=128, height=128)
                job = [r for r in caplog.records if r.name == "hybridsr.server.costs"]
    assert {r.levelno for r in quoted} == {logging.DEBUG}  # both fallbacks, three times
    assert any("no SR timing" in r.getMessage() for r in quoted)
    assert any("no link measurements" in r.getMessage() for r in quoted)
    assert logging.WARNING in {r.levelno for r in job}
