"""The Celery entry point for the ``worker`` and ``beat`` processes: ``celery -A worker.main``."""

from storage.logformat import configure_logging
from storage.settings import settings_or_exit
from worker.queue import create_celery

settings = settings_or_exit()
# At once, so that what Celery says before it sets up logging (a warning) is a JSON line too.
configure_logging(settings.log_format)
app = create_celery(settings)
