"""Log set-up for the daemon: readable text, or one JSON object per line for collectors."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class JsonFormatter(logging.Formatter):
    """One JSON object per record; `job_id` passed via `extra=` becomes a field of its own."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None)
        if job_id is not None:
            entry["job_id"] = job_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the moment of each record.

    A handler bound to the stream of the moment keeps writing there after an embedding app
    or a test runner swaps `sys.stderr` and closes the old one ("I/O operation on closed
    file" on every later record).
    """

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it: ignored
        pass


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Log to stderr; calling it again replaces the handler it installed, nothing else."""
    handler = StderrHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, StderrHandler)] + [handler]
    root.setLevel(level.upper())


@contextmanager
def stderr_logging(level: str = "INFO", fmt: str = "text") -> Iterator[None]:
    """`setup_logging` for the span of a CLI call, then the root logger as it was.

    A CLI's `main` called in-process (tests, an app) would otherwise leave an INFO handler on
    the root logger, and every later record of the process would go to stderr.
    """
    root = logging.getLogger()
    handlers, was = list(root.handlers), root.level
    setup_logging(level, fmt)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(was)
