"""The daemon's log set-up survives a swapped and closed stderr, as in-process CLI calls do."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from hybridsr.server.logs import setup_logging


@pytest.fixture
def root_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers[:], root.level = handlers, level


def test_records_go_to_the_current_stderr_after_a_swap(root_logging, monkeypatch):
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging("INFO")
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    first.close()  # what a test runner does with a finished test's captured stream
    logging.getLogger("hybridsr.test").info("edge ready")
    out = second.getvalue()
    assert "edge ready" in out and "Logging error" not in out


def test_setting_up_twice_keeps_one_handler_and_others_handlers(root_logging, monkeypatch):
    other = logging.NullHandler()
    root_logging.addHandler(other)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    setup_logging("INFO")
    setup_logging("DEBUG", "json")
    logging.getLogger("hybridsr.test").info("once")
    assert sys.stderr.getvalue().count("once") == 1
    assert other in root_logging.handlers


def test_an_in_process_cli_call_leaves_the_root_logger_as_it_was(root_logging, capsys):
    from hybridsr.server.cli import main

    before = (list(root_logging.handlers), root_logging.level)
    assert main(["serve", "--sr-batch", "0"]) == 2
    assert main(["deploy", "--ray-address", "local", "--log-level", "DEBUG"]) == 2
    assert (list(root_logging.handlers), root_logging.level) == before
    logging.getLogger("hybridsr.test").info("after the call")
    assert "after the call" not in capsys.readouterr().err
