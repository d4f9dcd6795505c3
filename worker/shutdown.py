"""A worker that stops within moments of a SIGTERM when idle, and after its tasks when busy.

Process managers signal in one of two ways: honcho, systemd (``KillMode=control-group``)
and most container runtimes send SIGTERM to every process of the worker, pool processes
included; others signal only the main process. Either way the main process does Celery's
warm shutdown (stop consuming, let the running tasks finish, acknowledge them, exit), and
what stood in its way was:

- **Pool processes dying on the signal.** Celery resets SIGTERM to its default in each pool
  process, so a group SIGTERM killed them mid-task and the main process logged "Process
  'ForkPoolWorker-1' … exited with 'signal 15 (SIGTERM)'" errors. They now ignore it: the
  main process owns their lifetime (it sends them a sentinel, and the kernel kills them
  with SIGKILL if it dies, ``PR_SET_PDEATHSIG``).
- **A second lost at each pool process's exit.** billiard's pool process, once it has told
  its parent it is exiting, sleeps a second for the parent to kill it; during a shutdown
  nothing reads that message any more, so every stop waited the whole second. It now
  leaves a tenth of a second after saying so.
- **The main process noticing late.** Celery checks for a shutdown between waits for
  messages. On Redis a wait is one ``BRPOP`` whose timeout is the transport's
  ``polling_interval`` (1 s by default; 0.25 s here, ``worker.queue``). kombu's filesystem
  transport has no event loop: Celery's blocking loop waits 2 s at a time, polling the
  folder every second, so a signal could take 3 s to be seen. ``FilesystemTransport``
  returns from each wait within a quarter of a second instead.
- Celery's SIGTERM handler prints a plain "worker: Warm shutdown" line on stdout; the one
  installed here logs it (JSON like every other line) and does the same thing.

With these an idle worker exits in about a second of a SIGTERM (what remains is billiard's
pool supervisor thread, which wakes every 0.8 s). Celery's cold shutdown (SIGQUIT, a
second Ctrl-C) ends pool processes with SIGTERM too, so it now waits for a running task as
well; SIGKILL cuts one short (the message is acknowledged late, so it is delivered again).
Hard time limits are unaffected: billiard follows its SIGTERM with SIGKILL.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from types import FrameType
from typing import Any

from celery import signals
from celery.platforms import EX_OK
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

log = logging.getLogger(__name__)

#: How long a filesystem-broker wait lasts at most before the worker looks for a shutdown.
WAIT_SLICE_SECONDS = 0.25
#: How long an exiting pool process gives its last message to reach the pipe.
EXIT_GRACE_SECONDS = 0.1


class FilesystemChannel(filesystem.Channel):
    """kombu's filesystem channel, writing each message whole before a consumer can see it.

    kombu creates a message's file under its final name and then writes into it; a
    consumer listing the folder meanwhile moves the file away and reads it empty, and the
    worker dies of the JSON error ("Unrecoverable error: JSONDecodeError"). With beat
    sending two tasks every second that took the embedded default's worker down within a
    minute. Here the message is written under a name no consumer takes, then renamed to
    its final name, which is atomic within a folder.
    """

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.partial")
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class FilesystemTransport(filesystem.Transport):
    """kombu's filesystem transport, answering a wait within ``WAIT_SLICE_SECONDS``, its
    messages written whole (``FilesystemChannel``).

    A wait that times out early is one the caller repeats (Celery's loop treats a timeout
    as "nothing yet"); a wait without a timeout is left as it is.
    """

    Channel = FilesystemChannel

    def drain_events(self, connection: Any, timeout: Any = None, **kwargs: Any) -> Any:
        if timeout is not None:
            timeout = min(timeout, WAIT_SLICE_SECONDS)
        return super().drain_events(connection, timeout=timeout, **kwargs)


@signals.worker_process_init.connect
def _pool_process_ignores_sigterm(**_: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@signals.worker_process_shutdown.connect
def _pool_process_leaves_promptly(exitcode: int | None = None, **_: Any) -> None:
    """Runs in the pool process just before it reports its exit and sleeps (see above)."""
    code = exitcode if isinstance(exitcode, int) else 0

    def leave(signum: int, frame: FrameType | None) -> None:
        os._exit(code)

    signal.signal(signal.SIGALRM, leave)
    signal.setitimer(signal.ITIMER_REAL, EXIT_GRACE_SECONDS)


@signals.worker_ready.connect
def _install_sigterm_handler(**_: Any) -> None:
    """Celery's warm shutdown on SIGTERM, announced as a log line (main process only)."""
    from celery.worker import state

    def warm_shutdown(signum: int, frame: FrameType | None) -> None:
        log.info("SIGTERM: warm shutdown, finishing the running tasks")
        state.should_stop = EX_OK

    signal.signal(signal.SIGTERM, warm_shutdown)
