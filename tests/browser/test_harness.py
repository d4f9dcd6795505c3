"""The browser harness itself: live server, Chromium, axe-core, captures, time zones."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from urllib.parse import quote

import pytest
from flask import Flask
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from werkzeug.test import Client

from storage.db import Database
from storage.settings import Settings
from tests.browser import conftest as harness_fixtures
from tests.browser.harness import AxeViolations, axe_violations, screenshot, set_timezone
from tests.factories import make_tenant

GOOD_PAGE = "<html lang=en><title>t</title><main><h1>x</h1></main></html>"
BAD_PAGE = (
    "<html lang=en><title>t</title><main><h1>x</h1>"
    "<input type=text><img src='data:image/gif;base64,R0lGODlhAQABAAAAACw='></main></html>"
)
TALL_PAGE = "<html lang=en><title>t</title><body style='margin:0'><div style='height:2000px'>"


def data_url(html: str) -> str:
    return "data:text/html;charset=utf-8," + quote(html)


def fetch(browser: WebDriver, path: str, api_key: str | None = None) -> dict:
    """GET ``path`` from the page's own origin, as the console's scripts would."""
    return browser.execute_async_script(
        """
        const [path, key, done] = arguments;
        const headers = key ? {Authorization: "Bearer " + key} : {};
        fetch(path, {headers}).then(async (r) => done({status: r.status, body: await r.json()}),
                                    (e) => done({status: 0, body: String(e)}));
        """,
        path,
        api_key,
    )


def test_the_live_server_serves_the_tests_app_and_database(
    live_server, browser: WebDriver, database: Database, settings: Settings
) -> None:
    assert live_server.app.extensions["auditlog"].database is database
    browser.get(live_server.url + "/v1/openapi.json")
    spec = json.loads(browser.find_element(By.TAG_NAME, "pre").text)
    assert spec["openapi"] == "3.1.0"
    assert any(path.startswith("/v1/") for path in spec["paths"])

    tenant = make_tenant(database, settings)
    answer = fetch(browser, "/v1/event-types", tenant.api_key)
    assert answer["status"] == 200, answer
    assert fetch(browser, "/v1/event-types")["status"] == 401


def test_axe_passes_a_clean_page(browser: WebDriver) -> None:
    browser.get(data_url(GOOD_PAGE))
    assert browser.title == "t"
    assert not axe_violations(browser)


def test_axe_fails_a_page_with_an_unlabelled_input_and_an_image_without_alt(
    browser: WebDriver,
) -> None:
    browser.get(data_url(BAD_PAGE))
    violations = axe_violations(browser)
    found = {violation.id: violation for violation in violations}
    assert {"label", "image-alt"} <= found.keys(), violations
    assert found["label"].targets == ("input",)
    assert found["image-alt"].targets == ("img",)
    assert found["image-alt"].impact == "critical"
    assert found["image-alt"].help_url.startswith("https://dequeuniversity.com/rules/axe/")
    # What `assert not axe_violations(browser)` shows: short, and naming rule and node.
    assert "image-alt (critical) at img" in repr(violations)
    assert "label (critical) at input" in repr(violations)
    assert "Images must have alternative text" in str(violations)
    # A second run on the same page reuses the injected axe.
    assert axe_violations(browser, impacts=("critical",)) == violations
    assert not axe_violations(browser, context="h1")


def test_axe_rejects_an_unknown_impact(browser: WebDriver) -> None:
    with pytest.raises(ValueError, match="severe"):
        axe_violations(browser, impacts=("severe",))


def test_the_empty_report_reads_well() -> None:
    assert repr(AxeViolations()) == "<no axe violations>"


def test_set_timezone_changes_the_pages_zone(browser: WebDriver) -> None:
    browser.get(data_url(GOOD_PAGE))
    zone = "return Intl.DateTimeFormat().resolvedOptions().timeZone"
    offset = "return new Date('2026-01-15T12:00:00Z').getTimezoneOffset()"
    assert browser.execute_script(zone) == "UTC"
    set_timezone(browser, "America/New_York")
    assert browser.execute_script(zone) == "America/New_York"
    assert browser.execute_script(offset) == 300
    browser.get(data_url(GOOD_PAGE))  # lasts across navigations
    assert browser.execute_script(zone) == "America/New_York"


def test_each_test_starts_in_utc(browser: WebDriver) -> None:
    # Runs after the test above, on the same session browser.
    browser.get(data_url(GOOD_PAGE))
    assert browser.execute_script("return Intl.DateTimeFormat().resolvedOptions().timeZone") == (
        "UTC"
    )


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_capture_saves_the_whole_page_only_when_asked(
    browser: WebDriver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser.get(data_url(TALL_PAGE))
    monkeypatch.delenv("SCREENSHOTS_DIR", raising=False)
    assert screenshot(browser, "tall") is None

    monkeypatch.setenv("SCREENSHOTS_DIR", str(tmp_path / "shots"))
    path = screenshot(browser, "tall")
    assert path == tmp_path / "shots" / "tall.png"
    width, height = png_size(path)
    assert height >= 2000 and width > 0
    with pytest.raises(ValueError, match="name"):
        screenshot(browser, "../escape")


def test_no_chromium_is_a_failure_not_a_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness_fixtures, "CHROMIUM", tmp_path / "no-chromium")
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium"):
        harness_fixtures._start_chromium(str(tmp_path / "profile"))


def test_server_errors_are_recorded() -> None:
    app = Flask("broken")

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    errors: list[str] = []
    client = Client(harness_fixtures._recording_5xx(app, errors))
    assert client.get("/boom?x=1").status_code == 500
    assert client.get("/missing").status_code == 404
    assert errors == ["GET /boom?x=1 -> 500 INTERNAL SERVER ERROR"]
