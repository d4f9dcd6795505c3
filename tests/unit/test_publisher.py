"""The web's publisher sends the very message ``Celery.send_task`` would, more cheaply."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import pytest
from celery._state import _task_stack

from storage.logformat import current_request_id
from storage.settings import Settings
from worker import queue
from worker.queue import BUILD_EXPORT, PROCESS_NOTIFICATIONS, create_celery


@pytest.fixture
def app(tmp_path):
    # No REDIS_URL: kombu's filesystem transport, one JSON file a message.
    settings = Settings(var_dir=tmp_path, database_url="sqlite://", secret_key="k" * 40)
    return create_celery(settings, fail_fast=True)


def taken(app) -> dict:
    """The one message in the broker's queue folder, taken out of it, without what is
    unique to each (ids, delivery tag) and with its body decoded."""
    folder = Path(app.conf.broker_transport_options["data_folder_in"])
    (path,) = [path for path in folder.iterdir() if path.is_file()]
    message = json.loads(path.read_text())
    path.unlink()
    message["body"] = json.loads(base64.b64decode(message["body"]))
    for key in ("id", "root_id"):
        message["headers"].pop(key)
    for key in ("correlation_id", "delivery_tag"):
        message["properties"].pop(key)
    return message


def lineage(app) -> tuple[str, str]:
    """The parent and root task ids of the one message in the queue folder (left there)."""
    folder = Path(app.conf.broker_transport_options["data_folder_in"])
    (path,) = [path for path in folder.iterdir() if path.is_file()]
    headers = json.loads(path.read_text())["headers"]
    return headers["parent_id"], headers["root_id"]


def test_a_publish_is_the_message_send_task_sends(app):
    app.send_task(PROCESS_NOTIFICATIONS, args=[[1, 2, 3]], kwargs=None, retry=False)
    expected = taken(app)
    queue.publisher(app)([1, 2, 3])
    assert taken(app) == expected

    # X-Request-ID may hold any printable ASCII: saferepr writes quotes and backslashes
    # as repr does not, and the publisher writes the others itself (control characters,
    # which the web does not admit, are left to Celery too).
    for request_id in ("req-1", "a'b\\c\"d", "a'b", "a\\b", 'a"b', "x" * 200, " ~!#", "a\tb\x7f"):
        token = current_request_id.set(request_id)
        try:
            app.send_task(
                PROCESS_NOTIFICATIONS, args=[[4]], kwargs={"request_id": request_id}, retry=False
            )
            expected = taken(app)
            queue.publisher(app)([4])
            assert taken(app) == expected
        finally:
            current_request_id.reset(token)
        assert expected["body"][1] == {"request_id": request_id}

    # A long list: Celery abbreviates its repr in the message, and so does the publisher.
    many = list(range(10**9, 10**9 + 1000))
    app.send_task(PROCESS_NOTIFICATIONS, args=[many], kwargs=None, retry=False)
    expected = taken(app)
    queue.publisher(app)(many)
    assert taken(app) == expected
    assert len(expected["headers"]["argsrepr"]) < len(repr([many]))

    app.send_task(BUILD_EXPORT, args=["exp_1"], retry=False)
    expected = taken(app)
    queue.export_starter(app)("exp_1")
    assert taken(app) == expected
    assert expected["headers"]["task"] == BUILD_EXPORT


def test_a_task_that_publishes_is_recorded_as_the_message_s_parent(app):
    """The sweeper publishes from inside a task: the message names it, as send_task's does."""

    @app.task(name="test.sweep", shared=False)
    def sweep() -> None: ...

    sweep.push_request(id="sweep-1", root_id="root-1", called_directly=False)
    _task_stack.push(sweep)
    try:
        app.send_task(PROCESS_NOTIFICATIONS, args=[[7]], retry=False)
        theirs = lineage(app)
        expected = taken(app)
        queue.publisher(app)([7])
        mine = lineage(app)
        assert taken(app) == expected
    finally:
        _task_stack.pop()
        sweep.pop_request()
    assert mine == theirs == ("sweep-1", "root-1")


def test_each_thread_and_each_forked_process_has_a_producer_of_its_own(app, monkeypatch):
    sender = queue._Sender(app, PROCESS_NOTIFICATIONS)
    mine, _ = sender.producer()
    assert sender.producer()[0] is mine
    theirs = []
    thread = threading.Thread(target=lambda: theirs.append(sender.producer()[0]))
    thread.start()
    thread.join()
    assert theirs[0] is not mine
    real_pid = queue.os.getpid()
    monkeypatch.setattr(queue.os, "getpid", lambda: real_pid + 1)
    assert sender.producer()[0] is not mine
