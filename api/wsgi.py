"""The gunicorn entry point: ``gunicorn api.wsgi:app``."""

from api.app import create_app
from storage.settings import settings_or_exit

#: gunicorn's "App failed to load" code: the arbiter stops instead of booting new workers
#: that would fail the same way.
APP_LOAD_ERROR = 4

app = create_app(settings_or_exit(APP_LOAD_ERROR))
