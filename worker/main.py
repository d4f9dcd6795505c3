"""The Celery entry point for the ``worker`` and ``beat`` processes: ``celery -A worker.main``."""

from storage.settings import Settings
from worker.queue import create_celery

app = create_celery(Settings.from_env())
