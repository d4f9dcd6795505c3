"""The console in a real headless Chromium: every page of the product, as a person uses it.

Each test opens a single-use link the way an embedding platform would, then clicks, types
and reads. Tests whose names contain ``screenshot`` also save the README's pictures when
``SCREENSHOTS_DIR`` is set (``make screenshots``).
"""

from __future__ import annotations

import csv
import io
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import Select, WebDriverWait

from api.app import create_app
from tests.browser.harness import axe_violations, screenshot, set_timezone
from tests.factories import console_story, make_tenant, notification, record_now
from worker.exports import build_export
from worker.sequencer import sequence_pending

ZONE = "America/New_York"


@pytest.fixture
def app(settings, database, publisher):  # type: ignore[no-untyped-def]
    """The test's app, with exports built by a thread of its own instead of a worker."""

    def start_export(export_id: str) -> None:
        threading.Thread(
            target=build_export,
            args=(database, export_id, settings.export_dir, settings.export_ttl_seconds),
            kwargs={"settings": settings},
            daemon=True,
        ).start()

    return create_app(settings, database=database, publish=publisher, start_export=start_export)


@pytest.fixture
def story(app, database, settings):
    tenant = make_tenant(database, settings, name="Acme", source="Okta sync")
    record_now(app.test_client(), tenant, database, *console_story())
    return tenant


def open_link(browser: WebDriver, live_server, tenant, **body: Any) -> None:
    client = live_server.app.test_client()
    response = client.post(
        "/v1/console-sessions",
        json=body,
        headers={"Authorization": f"Bearer {tenant.api_key}"},
    )
    assert response.status_code == 201, response.get_json()
    path = urlsplit(response.get_json()["url"]).path
    browser.get(live_server.url + path)


def api(live_server, tenant, path: str) -> Any:
    response = live_server.app.test_client().get(
        path, headers={"Authorization": f"Bearer {tenant.api_key}"}
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def shown_event_ids(browser: WebDriver) -> list[str]:
    return [
        link.get_attribute("href").rsplit("/", 1)[1]
        for link in browser.find_elements(By.CSS_SELECTOR, "li.event a.event-label")
    ]


def query_of(browser: WebDriver) -> dict[str, list[str]]:
    return parse_qs(urlsplit(browser.current_url).query)


def wait_for(browser: WebDriver, condition, timeout: float = 10) -> Any:
    return WebDriverWait(browser, timeout, poll_frequency=0.1).until(lambda _: condition())


def navigate(browser: WebDriver, element: Any) -> None:
    """Click a link or submit button and wait until the next page has replaced this one."""
    page = browser.find_element(By.TAG_NAME, "html")
    element.click()

    def replaced(_: WebDriver) -> bool:
        try:
            return bool(staleness_of(page)(browser))
        except WebDriverException as exc:
            # Chromium, asked about the old page's node mid-navigation, can answer "does
            # not belong to the document" instead of a stale reference: the same fact.
            if "does not belong to the document" in str(exc):
                return True
            raise

    WebDriverWait(browser, 10, poll_frequency=0.05).until(replaced)


def assert_accessible(browser: WebDriver) -> None:
    violations = axe_violations(browser)
    assert not violations, str(violations)


class TestGettingIn:
    def test_a_link_opens_once(self, browser, live_server, story):
        client = live_server.app.test_client()
        url = client.post(
            "/v1/console-sessions", headers={"Authorization": f"Bearer {story.api_key}"}
        ).get_json()["url"]
        path = urlsplit(url).path
        browser.get(live_server.url + path)
        assert urlsplit(browser.current_url).path == "/console/"
        assert path.rsplit("/", 1)[1] not in browser.current_url
        browser.delete_all_cookies()
        browser.get(live_server.url + path)
        assert "cannot be opened" in browser.find_element(By.TAG_NAME, "h1").text
        browser.get(live_server.url + "/console/")
        assert "Open the console through a link" in browser.find_element(By.TAG_NAME, "h1").text
        assert_accessible(browser)


class TestTheAggregateLog:
    def test_screenshot_of_the_aggregate_log(self, browser, live_server, story):
        set_timezone(browser, ZONE)
        open_link(
            browser,
            live_server,
            story,
            permissions=["export", "restore"],
            viewer={"id": "p-admin", "name": "Super Admin"},
        )
        expected = [e["id"] for e in api(live_server, story, "/v1/events")["events"]]
        assert shown_event_ids(browser) == expected
        first = browser.find_element(By.CSS_SELECTOR, "li.event time")
        # Local time in the browser's zone, the UTC instant in the title.
        assert first.get_attribute("title").endswith(" UTC")
        assert "EST" in first.text or "GMT-5" in first.text
        assert "Device Status Updated" in browser.page_source
        assert "status: " in browser.find_element(By.TAG_NAME, "main").text.replace("\n", " ")
        assert_accessible(browser)
        screenshot(browser, "console-log")

    def test_the_utc_switch_shows_utc_and_is_remembered(self, browser, live_server, story):
        set_timezone(browser, ZONE)
        open_link(browser, live_server, story)
        toggle = browser.find_element(By.CSS_SELECTOR, "[data-time-toggle]")
        toggle.click()
        first = browser.find_element(By.CSS_SELECTOR, "li.event time")
        assert first.text.endswith(" UTC") and toggle.get_attribute("aria-pressed") == "true"
        browser.refresh()
        assert browser.find_element(By.CSS_SELECTOR, "li.event time").text.endswith(" UTC")

    def test_tabs_narrow_the_log_by_entity_type(self, browser, live_server, story):
        open_link(browser, live_server, story)
        for label, entity_type in [
            ("People", "person"),
            ("Apps", "app"),
            ("Devices", "device"),
            ("Teams", "team"),
        ]:
            navigate(browser, browser.find_element(By.LINK_TEXT, label))
            assert query_of(browser)["entity_type"] == [entity_type]
            expected = api(live_server, story, f"/v1/events?entity_type={entity_type}")
            assert shown_event_ids(browser) == [e["id"] for e in expected["events"]]
            selected = browser.find_element(By.CSS_SELECTOR, ".tabs a[aria-current=page]")
            assert selected.text == label
        navigate(browser, browser.find_element(By.LINK_TEXT, "All"))
        assert "entity_type" not in query_of(browser)

    def test_every_filter_through_the_form(self, browser, live_server, story):
        open_link(browser, live_server, story)
        Select(browser.find_element(By.ID, "f-event-type")).select_by_visible_text(
            "Every person event"
        )
        browser.find_element(By.ID, "f-actor").send_keys("p-admin")
        browser.find_element(By.ID, "f-ip").send_keys("203.0.113.0/24")
        browser.find_element(By.ID, "f-since").send_keys("2026-11-25T00:00:00Z")
        browser.find_element(By.ID, "f-until").send_keys("2026-11-26T00:00:00Z")
        navigate(browser, browser.find_element(By.CSS_SELECTOR, ".filters button[type=submit]"))
        query = query_of(browser)
        assert query == {
            "event_type": ["person.*"],
            "actor_id": ["p-admin"],
            "ip": ["203.0.113.0/24"],
            "since": ["2026-11-25T00:00:00Z"],
            "until": ["2026-11-26T00:00:00Z"],
        }
        expected = api(live_server, story, "/v1/events?" + urlsplit(browser.current_url).query)
        assert shown_event_ids(browser) == [e["id"] for e in expected["events"]]
        assert len(expected["events"]) == 1
        # The form shows what the URL says.
        assert browser.find_element(By.ID, "f-ip").get_attribute("value") == "203.0.113.0/24"

    @pytest.mark.parametrize(
        "query",
        [
            "event_type=device.*",
            "actor_id=wf-offboard",
            "ip=2001:db8::/32",
            "since=2026-11-26T00:00:00Z",
            "until=2026-11-22T00:00:00Z",
            "entity_type=person&event_type=person.deleted",
        ],
    )
    def test_every_filter_through_the_url(self, browser, live_server, story, query):
        open_link(browser, live_server, story)
        browser.get(f"{live_server.url}/console/?{query}")
        expected = api(live_server, story, f"/v1/events?{query}")["events"]
        assert expected
        assert shown_event_ids(browser) == [e["id"] for e in expected]

    def test_a_malformed_filter_shows_the_apis_message_in_the_form(
        self, browser, live_server, story
    ):
        open_link(browser, live_server, story)
        browser.find_element(By.ID, "f-ip").send_keys("10.0.0.300")
        navigate(browser, browser.find_element(By.CSS_SELECTOR, ".filters button[type=submit]"))
        alert = browser.find_element(By.CSS_SELECTOR, ".form-errors[role=alert]")
        assert "IP address: Not an IP address or CIDR network." in alert.text
        assert browser.find_element(By.ID, "f-ip").get_attribute("aria-invalid") == "true"
        assert_accessible(browser)

    def test_older_events_pages_by_cursor(self, browser, live_server, story):
        open_link(browser, live_server, story)
        browser.get(f"{live_server.url}/console/?limit=4")
        seen = shown_event_ids(browser)
        while browser.find_elements(By.LINK_TEXT, "Older events"):
            navigate(browser, browser.find_element(By.LINK_TEXT, "Older events"))
            seen += shown_event_ids(browser)
        everything = api(live_server, story, "/v1/events?limit=500")["events"]
        assert seen == [e["id"] for e in everything]

    def test_following_new_events_shows_them_without_a_reload(
        self, browser, live_server, story, database
    ):
        open_link(browser, live_server, story)
        navigate(browser, browser.find_element(By.LINK_TEXT, "Follow new events"))
        assert query_of(browser)["live"] == ["1"]
        marker = browser.find_element(By.TAG_NAME, "h1")
        record_now(
            live_server.app.test_client(),
            story,
            database,
            notification(
                "person",
                "p-new",
                properties={"name": "Katherine Johnson"},
                occurred_at="2026-11-30T09:00:00Z",
            ),
        )
        wait_for(browser, lambda: "Katherine Johnson" in browser.page_source, timeout=15)
        assert marker.is_displayed()  # the same page: no reload happened


class TestARecord:
    def test_screenshot_of_a_records_history(self, browser, live_server, story):
        set_timezone(browser, ZONE)
        open_link(
            browser,
            live_server,
            story,
            permissions=["restore"],
            viewer={"id": "p-admin", "name": "Super Admin"},
        )
        browser.get(f"{live_server.url}/console/entities/person/p-ada")
        main = browser.find_element(By.TAG_NAME, "main").text
        assert "Ada Lovelace" in browser.find_element(By.TAG_NAME, "h1").text
        assert "History starts on" in main and "onboarded" in main
        assert "title: Engineer → Staff Engineer" in main.replace("\n", " ")
        expected = api(live_server, story, "/v1/entities/person/p-ada/history")["events"]
        assert shown_event_ids(browser) == [e["id"] for e in expected]
        assert browser.find_elements(By.XPATH, "//button[normalize-space()='Rewind title']")
        # Relationships link to their records.
        navigate(
            browser,
            browser.find_element(By.CSS_SELECTOR, 'dl.properties a[href$="/entities/app/zoom"]'),
        )
        assert "Zoom" in browser.find_element(By.TAG_NAME, "h1").text
        browser.back()
        assert_accessible(browser)
        screenshot(browser, "console-history")

    def test_as_of_shows_the_state_at_that_instant(self, browser, live_server, story):
        open_link(browser, live_server, story)
        browser.get(f"{live_server.url}/console/entities/person/p-ada")
        field = browser.find_element(By.ID, "as-of")
        field.send_keys("2026-11-24T00:00:00Z")
        navigate(
            browser, browser.find_element(By.XPATH, "//button[normalize-space()='Show state']")
        )
        assert query_of(browser)["as_of"] == ["2026-11-24T00:00:00Z"]
        state = browser.find_element(By.CSS_SELECTOR, "section.state").text
        then = api(live_server, story, "/v1/entities/person/p-ada?as_of=2026-11-24T00:00:00Z")
        assert then["properties"]["title"] == "Engineer"
        assert "Engineer" in state and "Staff Engineer" not in state
        assert "State as of" in state

    def test_a_person_has_history_and_activity_tabs(self, browser, live_server, story):
        open_link(browser, live_server, story)
        browser.get(f"{live_server.url}/console/entities/person/p-admin")
        navigate(browser, browser.find_element(By.LINK_TEXT, "Activity"))
        assert query_of(browser)["tab"] == ["activity"]
        expected = api(live_server, story, "/v1/actors/p-admin/activity")["events"]
        assert expected and shown_event_ids(browser) == [e["id"] for e in expected]
        navigate(browser, browser.find_element(By.LINK_TEXT, "History"))
        expected = api(live_server, story, "/v1/entities/person/p-admin/history")["events"]
        assert shown_event_ids(browser) == [e["id"] for e in expected]

    def test_a_deleted_record_keeps_its_last_name(self, browser, live_server, story):
        open_link(browser, live_server, story)
        browser.get(f"{live_server.url}/console/entities/person/p-grace")
        assert "Grace Hopper" in browser.find_element(By.TAG_NAME, "h1").text
        assert "This record is deleted" in browser.find_element(By.TAG_NAME, "main").text
        assert "Person Deleted" in browser.page_source


class TestAnActorAndAnEvent:
    def test_screenshot_of_an_activity(self, browser, live_server, story):
        set_timezone(browser, ZONE)
        open_link(browser, live_server, story)
        browser.get(f"{live_server.url}/console/")
        navigate(browser, browser.find_element(By.LINK_TEXT, "Super Admin"))
        assert urlsplit(browser.current_url).path == "/console/actors/p-admin"
        assert "Super Admin" in browser.find_element(By.TAG_NAME, "h1").text
        expected = api(live_server, story, "/v1/actors/p-admin/activity")["events"]
        assert shown_event_ids(browser) == [e["id"] for e in expected]
        assert_accessible(browser)
        screenshot(browser, "console-activity")

    def test_an_event_page_has_every_field_and_its_json(self, browser, live_server, story):
        open_link(browser, live_server, story)
        event = api(live_server, story, "/v1/events?event_type=app.property_updated")["events"][0]
        browser.get(f"{live_server.url}/console/events/{event['id']}")
        fields = browser.find_element(By.CSS_SELECTOR, "dl.fields").text
        for text in (event["id"], event["type"], "203.0.113.7", "manual", event["notification_id"]):
            assert text in fields
        raw = browser.find_element(By.CSS_SELECTOR, "pre.json").text
        assert '"property": "sso"' in raw
        # A long JSON value is shortened, with a way to see it whole.
        summary = browser.find_element(By.CSS_SELECTOR, "details.value-long summary")
        summary.click()
        assert (
            "Single sign-on enforced"
            in browser.find_element(By.CSS_SELECTOR, "details.value-long[open] pre").text
        )
        assert "Not sequenced yet" in browser.find_element(By.TAG_NAME, "main").text
        assert_accessible(browser)

    def test_an_event_page_shows_its_proof_in_the_signed_log(
        self, browser, live_server, story, database, settings
    ):
        sequence_pending(database, settings)
        open_link(browser, live_server, story)
        event = api(live_server, story, "/v1/events?event_type=person.property_updated")
        first = event["events"][0]
        browser.get(f"{live_server.url}/console/events/{first['id']}")
        main = browser.find_element(By.TAG_NAME, "main").text
        assert browser.find_elements(By.CSS_SELECTOR, "section .banner-success"), main
        banner = browser.find_element(By.CSS_SELECTOR, "section .banner-success").text
        size = api(live_server, story, "/v1/log/checkpoint")["tree_size"]
        assert f"Verified in checkpoint {size:,}" in banner
        assert f"event {first['seq']:,} is in the tree" in banner
        assert_accessible(browser)


class TestRewind:
    def test_screenshot_of_a_rewind_confirmation_and_the_restore(self, browser, live_server, story):
        set_timezone(browser, ZONE)
        open_link(
            browser,
            live_server,
            story,
            permissions=["restore"],
            viewer={"id": "p-admin", "name": "Super Admin", "email": "admin@example.com"},
        )
        browser.get(f"{live_server.url}/console/entities/person/p-ada")
        navigate(
            browser, browser.find_element(By.XPATH, "//button[normalize-space()='Rewind title']")
        )
        compare = browser.find_element(By.CSS_SELECTOR, "dl.compare").text
        assert "Current value\nStaff Engineer" in compare
        assert "Previous value (restored)\nEngineer" in compare
        assert_accessible(browser)
        screenshot(browser, "console-rewind")
        navigate(browser, browser.find_element(By.XPATH, "//button[normalize-space()='Restore']"))
        assert "Restored" in browser.find_element(By.CSS_SELECTOR, ".banner-success").text
        new_id = urlsplit(browser.current_url).path.rsplit("/", 1)[1]
        state = api(live_server, story, "/v1/entities/person/p-ada")
        assert state["properties"]["title"] == "Engineer"
        [restored] = api(live_server, story, "/v1/events?limit=1")["events"]
        assert restored["id"] == new_id
        assert restored["origin"] == "manual"
        assert restored["actor"]["id"] == "p-admin" and restored["actor"]["type"] == "user"
        assert restored["ip_address"] == "127.0.0.1"
        assert restored["details"]["restored_from"]
        assert (restored["old_value"], restored["new_value"]) == ("Staff Engineer", "Engineer")

    def test_a_refused_restore_says_why(self, browser, live_server, story, database):
        open_link(browser, live_server, story, permissions=["restore"], viewer={"id": "p-admin"})
        browser.get(f"{live_server.url}/console/entities/person/p-ada")
        navigate(
            browser, browser.find_element(By.XPATH, "//button[normalize-space()='Rewind title']")
        )
        # Someone else deletes the record while the confirmation is open.
        record_now(
            live_server.app.test_client(),
            story,
            database,
            notification("person", "p-ada", kind="delete", occurred_at="2026-11-29T00:00:00Z"),
        )
        navigate(browser, browser.find_element(By.XPATH, "//button[normalize-space()='Restore']"))
        alert = browser.find_element(By.CSS_SELECTOR, "[role=alert]")
        assert "deleted" in alert.text
        assert api(live_server, story, "/v1/entities/person/p-ada")["deleted"] is True

    def test_a_restore_without_the_csrf_token_is_refused(self, browser, live_server, story):
        open_link(browser, live_server, story, permissions=["restore"], viewer={"id": "p-admin"})
        browser.get(f"{live_server.url}/console/entities/person/p-ada")
        navigate(
            browser, browser.find_element(By.XPATH, "//button[normalize-space()='Rewind title']")
        )
        status = browser.execute_async_script(
            """
            const done = arguments[arguments.length - 1];
            fetch(location.pathname, {method: "POST", body: new URLSearchParams({})})
              .then((r) => done(r.status));
            """
        )
        assert status == 403
        assert api(live_server, story, "/v1/entities/person/p-ada")["properties"]["title"] == (
            "Staff Engineer"
        )


class TestExport:
    def test_an_export_of_the_view_downloads_what_the_view_shows(self, browser, live_server, story):
        open_link(browser, live_server, story, permissions=["export"])
        browser.get(f"{live_server.url}/console/?entity_type=person")
        shown = shown_event_ids(browser)
        navigate(
            browser, browser.find_element(By.XPATH, "//button[normalize-space()='Export CSV']")
        )
        assert urlsplit(browser.current_url).path.startswith("/console/exports/")
        link = wait_for(
            browser,
            lambda: browser.find_elements(By.LINK_TEXT, "Download CSV"),
            timeout=20,
        )[0]
        text = browser.execute_async_script(
            """
            const [href, done] = arguments;
            fetch(href).then((r) => r.text()).then(done);
            """,
            link.get_attribute("href"),
        )
        rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
        assert [row["event_id"] for row in rows] == shown
        assert {row["entity_type"] for row in rows} == {"person"}
        assert_accessible(browser)


class TestScopesInTheBrowser:
    def test_a_record_scoped_link_lands_on_its_record_and_sees_nothing_else(
        self, browser, live_server, story
    ):
        open_link(browser, live_server, story, scope={"entity": {"type": "person", "id": "p-ada"}})
        assert urlsplit(browser.current_url).path == "/console/entities/person/p-ada"
        assert shown_event_ids(browser)
        assert not browser.find_elements(By.CSS_SELECTOR, 'a[href$="/entities/app/zoom"]')
        browser.get(f"{live_server.url}/console/")
        assert "Not found" in browser.find_element(By.TAG_NAME, "h1").text
        browser.get(f"{live_server.url}/console/entities/app/zoom")
        assert "Not found" in browser.find_element(By.TAG_NAME, "h1").text

    def test_another_organisations_event_is_not_found(
        self, browser, live_server, story, database, settings
    ):
        other = make_tenant(database, settings)
        record_now(live_server.app.test_client(), other, database, *console_story("-b"))
        theirs = api(live_server, other, "/v1/events")["events"][0]["id"]
        open_link(browser, live_server, story)
        browser.get(f"{live_server.url}/console/events/{theirs}")
        assert "Not found" in browser.find_element(By.TAG_NAME, "h1").text


class TestNarrowWindow:
    def test_screenshot_of_the_log_in_a_narrow_window(self, browser, live_server, story):
        browser.set_window_size(420, 900)
        open_link(browser, live_server, story)
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 420
        assert_accessible(browser)
        screenshot(browser, "console-narrow")
