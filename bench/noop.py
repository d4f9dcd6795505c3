"""A bare Celery app on the same broker: the no-op task baseline."""

import os

import redis
from celery import Celery

app = Celery("bench-noop", broker=os.environ["REDIS_URL"], set_as_current=False)
app.conf.update(
    task_default_queue="bench-noop",
    task_ignore_result=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)
_counter = redis.Redis.from_url(os.environ["REDIS_URL"])


@app.task(name="bench.noop")
def noop() -> None:
    """Counts itself, so the benchmark knows when all have run."""
    _counter.incr("bench:noop:done")
