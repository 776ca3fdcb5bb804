"""streams/app.py: the worker's wiring."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any, cast

import faust

from streams.app import KudosWorker


def test_the_worker_keeps_library_debug_logging_off_at_warning() -> None:
    """faust's start-up spinner would set the root logger to DEBUG, so that aiokafka built a
    log record for every message it sends (a few percent of a worker's CPU)."""
    app = faust.App("kudos-test-app", broker="kafka://127.0.0.1:1")
    worker = KudosWorker(cast(Any, SimpleNamespace(app=app)), loglevel="warning", quiet=True)
    root = logging.getLogger()
    before = root.level
    try:
        root.handlers = root.handlers or [logging.StreamHandler()]
        worker.on_setup_root_logger(root, logging.WARNING)
        assert not logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.DEBUG)
    finally:
        root.setLevel(before)
