"""The embedded broker (kombu's filesystem transport) never hands out a half-written message."""

from __future__ import annotations

import os
import queue
import threading

from kombu import Connection

from worker import shutdown
from worker.shutdown import FilesystemTransport


def channel(folder):
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "processed_folder": str(folder / "processed"),
        "store_processed": False,
    }
    (folder / "processed").mkdir()
    connection = Connection("filesystem://localhost/", transport=FilesystemTransport)
    connection.transport_options.update(options)
    return connection, connection.channel()


def test_a_message_is_under_its_final_name_only_once_written(tmp_path, monkeypatch):
    connection, chan = channel(tmp_path)
    seen_before_rename: list[list[str]] = []
    real_replace = os.replace

    def replace(source, target):
        # What a consumer listing the folder right now could take: nothing yet.
        seen_before_rename.append([n for n in os.listdir(tmp_path) if n.endswith("q.msg")])
        return real_replace(source, target)

    monkeypatch.setattr(shutdown.os, "replace", replace)
    chan._put("q", {"body": "x" * 100_000})
    assert seen_before_rename == [[]]
    assert chan._get("q") == {"body": "x" * 100_000}
    connection.release()


def test_a_consumer_racing_a_producer_reads_every_message_whole(tmp_path):
    connection, chan = channel(tmp_path)
    count, received, errors = 300, [], []

    def produce():
        for n in range(count):
            chan._put("q", {"n": n, "pad": "y" * 20_000})

    producer = threading.Thread(target=produce)
    producer.start()
    while len(received) < count and not errors:
        try:
            received.append(chan._get("q")["n"])
        except queue.Empty:
            if not producer.is_alive() and not any(
                n.endswith(".msg") for n in os.listdir(tmp_path)
            ):
                break
        except ValueError as exc:  # a message read before it was written
            errors.append(exc)
    producer.join()
    assert errors == []
    assert sorted(received) == list(range(count))
    connection.release()
