"""Browser tests: the test's app on a real HTTP port, and a real headless Chromium.

Fixtures:

- ``live_server``: the ``app`` fixture (so the test's own database, SQLite then PostgreSQL)
  served on ``127.0.0.1`` and a free port in a background thread; ``.url``, ``.app``.
- ``browser``: a Selenium ``webdriver.Chrome`` on Debian's ``/usr/bin/chromium`` and
  ``/usr/bin/chromedriver`` (``.ci/run`` installs both). One browser serves the session; each
  test starts with no cookies, no time-zone override and a blank page. No Chromium is a
  failure, never a skip.

Helpers (``axe_violations``, ``screenshot``, ``set_timezone``) are in ``harness.py``. Every test
under this folder is marked ``browser``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from werkzeug.serving import WSGIRequestHandler, make_server

from tests.browser.harness import set_timezone

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1280, 900)
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
    "--lang=en-US",
)

_HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before -m selects on markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.browser)


class _Handler(WSGIRequestHandler):
    # One request per connection, as gunicorn's sync workers do: no keep-alive connection
    # (and no handler thread) outlives the test.
    protocol_version = "HTTP/1.0"


@dataclass
class LiveServer:
    """The app on a real port. ``server_errors`` lists each 5xx answered, as ``GET /x -> 500``;
    the test fails at teardown if any is left there (clear it when a test expects one)."""

    url: str
    app: Flask
    server_errors: list[str] = field(default_factory=list)


def _recording_5xx(app: Flask, errors: list[str]) -> Callable[..., Iterable[bytes]]:
    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def record(status: str, headers: Any, exc_info: Any = None) -> Any:
            if status.startswith("5"):
                query = environ.get("QUERY_STRING")
                path = environ.get("PATH_INFO", "") + (f"?{query}" if query else "")
                errors.append(f"{environ.get('REQUEST_METHOD')} {path} -> {status}")
            return start_response(status, headers, exc_info)

        return app(environ, record)

    return wsgi


@pytest.fixture
def live_server(app: Flask) -> Iterator[LiveServer]:
    errors: list[str] = []
    server = make_server(
        "127.0.0.1", 0, _recording_5xx(app, errors), threaded=True, request_handler=_Handler
    )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="live-server"
    )
    thread.daemon = True
    thread.start()
    live = LiveServer(url=f"http://127.0.0.1:{server.server_port}", app=app, server_errors=errors)
    try:
        yield live
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    if live.server_errors:
        pytest.fail(
            "the live server answered with server errors (see the captured log):\n  "
            + "\n  ".join(live.server_errors),
            pytrace=False,
        )


def _start_chromium(profile: str) -> WebDriver:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(
            f"browser tests need Debian's Chromium and its driver; missing: {', '.join(missing)}."
            " Install them with: apt-get install -y chromium chromium-driver (.ci/run does).",
            pytrace=False,
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in CHROMIUM_ARGS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={profile}")
    # The browser's own clock zone, whatever the machine's: set_timezone() overrides it.
    service = Service(str(CHROMEDRIVER), env={**os.environ, "TZ": "UTC"})
    try:
        driver = webdriver.Chrome(options=options, service=service)
    except WebDriverException as error:
        pytest.fail(f"Chromium did not start: {error.msg or error}", pytrace=False)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


@pytest.fixture(scope="session")
def chromium_session() -> Iterator[WebDriver]:
    """The session's one headless Chromium; tests use ``browser``, which resets it."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        driver = _start_chromium(profile)
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _reset(driver: WebDriver) -> None:
    handles = driver.window_handles
    for handle in handles[1:]:
        driver.switch_to.window(handle)
        driver.close()
    driver.switch_to.window(handles[0])
    if driver.current_url.startswith("http"):
        origin = driver.execute_script("return window.location.origin")
        driver.execute_cdp_cmd(
            "Storage.clearDataForOrigin", {"origin": origin, "storageTypes": "all"}
        )
    driver.get("about:blank")
    # Cookies are per host, not per port: clear them all, not only the current site's.
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    set_timezone(driver, None)
    if tuple(driver.get_window_size().values()) != WINDOW:
        driver.set_window_size(*WINDOW)


@pytest.fixture
def browser(chromium_session: WebDriver) -> Iterator[WebDriver]:
    """A clean headless Chromium (Selenium ``WebDriver``): no cookies, UTC, 1280x900."""
    _reset(chromium_session)
    yield chromium_session
    _reset(chromium_session)
