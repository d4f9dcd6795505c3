"""The Celery entry point for the ``worker`` and ``beat`` processes: ``celery -A worker.main``."""

from storage.settings import settings_or_exit
from worker.queue import create_celery

app = create_celery(settings_or_exit())
