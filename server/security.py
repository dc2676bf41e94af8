"""Bearer-token auth, TLS context and per-client rate limits for the edge."""

from __future__ import annotations

import hmac
import ssl
import time

from aiohttp import web

from hybridsr.protocol import ErrorCode

OPEN_PATHS = frozenset({"/healthz"})  # probes from load balancers carry no token


def auth_middleware(token: str) -> web.middleware:
    expected = token.encode()

    @web.middleware
    async def check_token(request: web.Request, handler):
        if request.path not in OPEN_PATHS:
            header = request.headers.get("Authorization", "")
            supplied = header[len("Bearer "):].encode() if header.startswith("Bearer ") else b""
            # Constant-time comparison: response timing says nothing about the token.
            if not hmac.compare_digest(supplied, expected):
                return web.json_response(
                    {"code": ErrorCode.UNAUTHORIZED.value,
                     "message": "missing or wrong bearer token"},
                    status=401, headers={"WWW-Authenticate": "Bearer"},
                )
        return await handler(request)

    return check_token


def server_ssl_context(cert: str, key: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


class RateLimiter:
    """A token bucket per client key: `rate` jobs per second, bursts up to `burst`."""

    def __init__(self, rate: float, burst: int, max_clients: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, last refill)

    def acquire(self, key: str) -> float:
        """Take one token; returns 0.0 when allowed, else seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        tokens, now = self._tokens(key)
        if tokens >= 1.0:
            self._remember(key, tokens - 1.0, now)
            return 0.0
        self._remember(key, tokens, now)
        return (1.0 - tokens) / self.rate

    def peek(self, key: str) -> float:
        """What `acquire` would return now, taking nothing."""
        if self.rate <= 0:
            return 0.0
        tokens, _ = self._tokens(key)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def _tokens(self, key: str) -> tuple[float, float]:
        """The key's tokens now (refilled since its last visit), and now."""
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - last) * self.rate), now

    def _remember(self, key: str, tokens: float, now: float) -> None:
        if key not in self._buckets and len(self._buckets) >= self.max_clients:
            # Forget the longest-idle client rather than grow without bound.
            oldest = min(self._buckets, key=lambda k: self._buckets[k][1])
            del self._buckets[oldest]
        self._buckets[key] = (tokens, now)
