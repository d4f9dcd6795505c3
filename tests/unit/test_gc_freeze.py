"""Web and pool processes leave what they start with out of the collector's full passes."""

from __future__ import annotations

import gc
from types import SimpleNamespace

import pytest
from celery import signals

import worker.queue  # noqa: F401 - connects the pool process's signal handlers
from api import gunicorn_conf


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    yield
    gc.unfreeze()


def test_a_pool_process_freezes_what_it_starts_with(unfrozen):
    signals.worker_process_init.send(sender=None)
    assert gc.get_freeze_count() > 0


def test_a_web_worker_freezes_what_it_holds_once_the_app_is_loaded(unfrozen):
    logged = []
    worker = SimpleNamespace(pid=1, log=SimpleNamespace(info=lambda *a: logged.append(a)))
    gunicorn_conf.post_worker_init(worker)
    assert gc.get_freeze_count() > 0
    assert logged == [("worker %s ready", 1)]
