"""The console over HTTP: links, sessions, scopes, tenancy, CSRF and headers.

What a browser shows is in ``tests/browser``; these tests check the rules every page keeps,
through the Flask test client, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select, update

from storage.models import ConsoleLink, Event, Export
from tests.factories import console_story, make_tenant, record_now


def auth(tenant):
    return {"Authorization": f"Bearer {tenant.api_key}"}


def mint(client, tenant, **body):
    response = client.post("/v1/console-sessions", json=body, headers=auth(tenant))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def enter(client, tenant, **body):
    """Open a fresh link in this client: it now holds a console session."""
    path = urlsplit(mint(client, tenant, **body)["url"]).path
    response = client.get(path)
    assert response.status_code == 303, response.data
    return response


def event_ids(html: bytes) -> list[str]:
    return re.findall(r'href="/console/events/(evt_[0-9a-f]{16})"', html.decode())


@pytest.fixture
def tenant(database, settings):
    return make_tenant(database, settings)


@pytest.fixture
def story(client, tenant, database):
    record_now(client, tenant, database, *console_story())
    return tenant


class TestConsoleSessionsEndpoint:
    def test_a_link_is_absolute_and_expires_in_five_minutes(self, client, tenant):
        before = datetime.now(UTC)
        link = mint(client, tenant)
        assert link["url"].startswith("http://localhost/console/enter/")
        expires = datetime.fromisoformat(link["expires_at"].replace("Z", "+00:00"))
        assert (
            timedelta(minutes=4, seconds=59) <= expires - before <= timedelta(minutes=5, seconds=2)
        )

    def test_an_empty_body_or_none_is_a_whole_organisation_read_only_link(self, client, tenant):
        response = client.post("/v1/console-sessions", headers=auth(tenant))
        assert response.status_code == 201
        enter_path = urlsplit(response.get_json()["url"]).path
        assert client.get(enter_path).headers["Location"] == "/console/"

    @pytest.mark.parametrize(
        "body",
        [
            {"scope": {}},
            {"scope": {"entity": {"type": "person", "id": "p"}, "actor_id": "a"}},
            {"scope": {"entity": {"type": "planet", "id": "p"}}},
            {"scope": {"entity": {"type": "person"}}},
            {"scope": {"record": "p"}},
            {"permissions": ["delete"]},
            {"permissions": ["restore"]},
            {"permissions": "export"},
            {"viewer": {"name": "no id"}},
            {"colour": "blue"},
        ],
    )
    def test_anything_else_is_a_422(self, client, tenant, body):
        response = client.post("/v1/console-sessions", json=body, headers=auth(tenant))
        assert response.status_code == 422, response.get_json()
        assert response.get_json()["error"]["code"] == "validation_failed"

    def test_it_needs_an_api_key(self, client):
        assert client.post("/v1/console-sessions", json={}).status_code == 401

    def test_it_is_in_the_openapi_document(self, client):
        paths = client.get("/v1/openapi.json").get_json()["paths"]
        assert "post" in paths["/v1/console-sessions"]


class TestLinks:
    def test_a_link_opens_once_and_keeps_its_token_out_of_the_redirect(self, client, tenant):
        path = urlsplit(mint(client, tenant)["url"]).path
        token = path.rsplit("/", 1)[1]
        first = client.get(path)
        assert first.status_code == 303
        assert token not in first.headers["Location"]
        assert first.headers["Referrer-Policy"] == "no-referrer"
        assert client.get("/console/").status_code == 200
        other = client.application.test_client()
        again = other.get(path)
        assert again.status_code == 403
        assert b"already used or has expired" in again.data
        assert "auditlog_console=" not in again.headers.get("Set-Cookie", "")

    def test_an_altered_link_is_403(self, client, tenant):
        path = urlsplit(mint(client, tenant)["url"]).path
        response = client.get(path[:-2] + ("AA" if not path.endswith("AA") else "BB"))
        assert response.status_code == 403
        assert b"altered" in response.data

    def test_an_expired_link_is_403(self, client, tenant, database):
        path = urlsplit(mint(client, tenant)["url"]).path
        with database.unit_of_work(write=True) as session:
            session.execute(
                update(ConsoleLink).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
            session.commit()
        assert client.get(path).status_code == 403

    def test_the_session_cookie_is_httponly_lax_and_secure_over_https(self, app, tenant):
        plain = app.test_client()
        cookie = enter(plain, tenant).headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie
        assert "Secure" not in cookie
        secure = app.test_client()
        path = urlsplit(mint(secure, tenant)["url"]).path
        response = secure.get(path, base_url="https://localhost")
        assert "Secure" in response.headers["Set-Cookie"]

    def test_a_session_lasts_at_most_eight_hours(self, client, tenant, monkeypatch):
        enter(client, tenant)
        assert client.get("/console/").status_code == 200
        later = time.time() + 8 * 3600 + 1
        monkeypatch.setattr(time, "time", lambda: later)
        response = client.get("/console/")
        assert response.status_code == 401
        assert b"console-link" in response.data


class TestWithoutASession:
    @pytest.mark.parametrize(
        "path",
        [
            "/console/",
            "/console/entities/person/p-ada",
            "/console/actors/p-admin",
            "/console/events/evt_0000000000000001",
        ],
    )
    def test_every_page_is_401_and_says_how_to_get_in(self, client, path):
        response = client.get(path)
        assert response.status_code == 401
        assert b"auditlog console-link" in response.data

    def test_the_stylesheet_needs_no_session(self, client):
        with client.get("/console/static/console.css") as response:
            assert response.status_code == 200


class TestHeaders:
    def test_pages_carry_a_policy_with_no_inline_script_and_the_frame_ancestors(
        self, client, story
    ):
        enter(client, story)
        response = client.get("/console/")
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "frame-ancestors 'self'" in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "<script>" not in response.data.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)", response.data.decode())
        assert not re.search(r"\son[a-z]+=", response.data.decode())

    def test_frame_ancestors_come_from_the_setting(self, settings, database, tenant):
        import dataclasses

        from api.app import create_app

        framed = dataclasses.replace(
            settings, console_frame_ancestors="'self' https://platform.example"
        )
        client = create_app(framed, database=database, publish=lambda pks: None).test_client()
        enter(client, tenant)
        policy = client.get("/console/").headers["Content-Security-Policy"]
        assert "frame-ancestors 'self' https://platform.example" in policy


class TestScopes:
    def test_a_record_scoped_session_sees_only_that_record(self, client, story):
        response = enter(client, story, scope={"entity": {"type": "person", "id": "p-ada"}})
        assert response.headers["Location"] == "/console/entities/person/p-ada"
        page = client.get("/console/entities/person/p-ada")
        assert page.status_code == 200
        own = event_ids(page.data)
        assert own
        assert client.get(f"/console/events/{own[0]}").status_code == 200
        assert client.get("/console/").status_code == 404
        assert client.get("/console/entities/app/zoom").status_code == 404
        assert client.get("/console/actors/p-admin").status_code == 404
        # Links to records outside the scope are plain text, not links into a 404.
        assert b'href="/console/entities/app/zoom"' not in page.data

    def test_a_record_scoped_session_cannot_open_another_records_event(self, client, story):
        enter(client, story)
        grace = event_ids(client.get("/console/entities/person/p-grace").data)
        scoped = client.application.test_client()
        enter(scoped, story, scope={"entity": {"type": "person", "id": "p-ada"}})
        assert grace and all(scoped.get(f"/console/events/{e}").status_code == 404 for e in grace)

    def test_an_actor_scoped_session_sees_only_that_actors_activity(self, client, story):
        response = enter(client, story, scope={"actor_id": "p-admin"})
        assert response.headers["Location"] == "/console/actors/p-admin"
        page = client.get("/console/actors/p-admin")
        assert page.status_code == 200 and event_ids(page.data)
        assert client.get("/console/entities/person/p-ada").status_code == 404
        assert client.get("/console/actors/wf-offboard").status_code == 404
        assert client.get("/console/").status_code == 404

    def test_a_read_only_session_has_no_rewind_nor_export(self, client, story):
        enter(client, story)
        page = client.get("/console/entities/person/p-ada").data
        assert b"Rewind title" not in page and b"Export CSV" not in page
        [first, *_] = event_ids(page)
        assert client.get(f"/console/events/{first}/rewind").status_code == 403


class TestTenancy:
    def test_another_organisations_ids_are_404(self, client, story, database, settings):
        other = make_tenant(database, settings)
        record_now(client, other, database, *console_story("-b"))
        enter(client, other)
        theirs = event_ids(client.get("/console/").data)
        assert theirs
        mine = client.application.test_client()
        enter(mine, story)
        for event_id in theirs:
            assert mine.get(f"/console/events/{event_id}").status_code == 404
        assert mine.get("/console/entities/person/p-ada-b").status_code == 404
        assert not set(event_ids(mine.get("/console/?limit=500").data)) & set(theirs)


class TestForms:
    def test_a_malformed_filter_shows_the_apis_message(self, client, story):
        enter(client, story)
        response = client.get("/console/?ip=not-an-address&since=yesterday")
        assert response.status_code == 422
        assert b"Not an IP address or CIDR network." in response.data
        api = client.get("/v1/events?ip=not-an-address", headers=auth(story)).get_json()
        assert api["error"]["details"]["ip"][0].encode() in response.data

    def test_an_unknown_record_is_404(self, client, story):
        enter(client, story)
        assert client.get("/console/entities/person/nobody").status_code == 404
        assert client.get("/console/entities/planet/p-ada").status_code == 404
        assert client.get("/console/events/evt_not_an_id").status_code == 404

    def test_ids_with_a_slash_have_pages(self, client, tenant, database):
        from tests.factories import notification

        record_now(
            client,
            tenant,
            database,
            notification("person", "cn=ada,ou=people/eu", properties={"name": "Ada"}),
        )
        enter(client, tenant)
        page = client.get("/console/entities/person/cn=ada,ou=people/eu")
        assert page.status_code == 200 and b"Ada" in page.data

    def test_rewind_without_the_csrf_token_is_403_and_changes_nothing(
        self, client, story, database
    ):
        enter(client, story, permissions=["restore"], viewer={"id": "p-admin"})
        [update_id] = [
            e
            for e in event_ids(client.get("/console/entities/person/p-ada").data)
            if b"Rewind title" in client.get(f"/console/events/{e}").data
        ][:1]
        with database.unit_of_work() as session:
            before = session.scalar(select(Event.id).order_by(Event.id.desc()).limit(1))
        assert client.post(f"/console/events/{update_id}/rewind").status_code == 403
        wrong = client.post(f"/console/events/{update_id}/rewind", data={"csrf_token": "x"})
        assert wrong.status_code == 403
        with database.unit_of_work() as session:
            assert session.scalar(select(Event.id).order_by(Event.id.desc()).limit(1)) == before

    def test_export_without_the_csrf_token_is_403_and_creates_nothing(
        self, client, story, database
    ):
        enter(client, story, permissions=["export"])
        response = client.post("/console/exports", data={"view": "/console/"})
        assert response.status_code == 403
        with database.unit_of_work() as session:
            assert session.scalars(select(Export.id)).all() == []

    def test_an_export_shows_its_progress_until_it_is_built(self, client, story):
        enter(client, story, permissions=["export"])
        page = client.get("/console/?entity_type=person").data.decode()
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        view = re.search(r'name="view" value="([^"]+)"', page).group(1)
        response = client.post("/console/exports", data={"csrf_token": token, "view": view})
        assert response.status_code == 303
        status = client.get(response.headers["Location"])
        assert b"<progress" in status.data and b'hx-trigger="every 1s"' in status.data
        export_id = response.headers["Location"].rsplit("/", 1)[1]
        api = client.get(f"/v1/exports/{export_id}", headers=auth(story)).get_json()
        assert api["filters"] == {"entity_type": "person"}
        assert client.get(f"/console/exports/{export_id}/download").status_code == 409

    def test_an_export_of_another_session_is_404(self, client, story):
        enter(client, story, permissions=["export"])
        page = client.get("/console/").data.decode()
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        location = client.post(
            "/console/exports", data={"csrf_token": token, "view": "/console/"}
        ).headers["Location"]
        stranger = client.application.test_client()
        enter(stranger, story, permissions=["export"])
        assert stranger.get(location).status_code == 404


class TestFoundInReview:
    def test_a_record_scoped_person_session_does_not_see_that_persons_activity(self, client, story):
        enter(client, story, scope={"entity": {"type": "person", "id": "p-admin"}})
        page = client.get("/console/entities/person/p-admin")
        assert page.status_code == 200 and b"?tab=activity" not in page.data
        assert client.get("/console/entities/person/p-admin?tab=activity").status_code == 404

    def test_clear_filters_keeps_the_page_and_its_tab(self, client, story):
        enter(client, story)
        page = client.get("/console/?entity_type=person&actor_id=p-admin").data.decode()
        link = re.search(r'class="clear" href="([^"]+)"', page).group(1)
        assert link.replace("&amp;", "&") == "/console/?entity_type=person"

    def test_an_id_with_a_question_mark_keeps_its_forms_on_its_own_page(
        self, client, tenant, database
    ):
        from tests.factories import notification

        record_now(client, tenant, database, notification("person", "a?b#c%41"))
        enter(client, tenant, permissions=["export"])
        page = client.get("/console/entities/person/a%3Fb%23c%2541")
        assert page.status_code == 200
        html = page.data.decode()
        assert 'action="/console/entities/person/a%3Fb%23c%2541"' in html
        view = re.search(r'name="view" value="([^"]+)"', html).group(1)
        token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
        created = client.post("/console/exports", data={"csrf_token": token, "view": view})
        export_id = created.headers["Location"].rsplit("/", 1)[1]
        api = client.get(f"/v1/exports/{export_id}", headers=auth(tenant)).get_json()
        assert api["filters"]["entity_id"] == "a?b#c%41"

    def test_a_non_ascii_csrf_token_is_403(self, client, story):
        enter(client, story, permissions=["export"])
        response = client.post("/console/exports", data={"csrf_token": "é", "view": "/console/"})
        assert response.status_code == 403

    @pytest.mark.parametrize(
        "event_id", ["evt_ffffffffffffffff", "evt_+fffffffffffffff", "evt_0x00000000000001"]
    )
    def test_an_id_that_is_not_an_event_id_is_404(self, client, story, event_id):
        enter(client, story)
        assert client.get(f"/console/events/{event_id}").status_code == 404

    @pytest.mark.parametrize(
        "path, status",
        [
            ("/console/entities/person/a%00", 404),
            ("/console/actors/%00", 404),
            ("/console/?actor_id=%00", 422),
            ("/v1/entities/person/a%00", 404),
            ("/v1/events?actor_id=a%00b", 422),
        ],
    )
    def test_a_nul_anywhere_in_a_url_is_refused_cleanly(self, client, story, path, status):
        enter(client, story)
        assert client.get(path, headers=auth(story)).status_code == status

    def test_an_actor_scoped_rewind_lands_on_its_new_event(self, client, story):
        enter(
            client,
            story,
            scope={"actor_id": "p-admin"},
            permissions=["restore"],
            viewer={"id": "p-9", "name": "Auditor"},
        )
        page = client.get("/console/actors/p-admin").data.decode()
        event_id = next(
            e
            for e in event_ids(page.encode())
            if "Rewind title" in client.get(f"/console/events/{e}").data.decode()
        )
        form = client.get(f"/console/events/{event_id}/rewind").data.decode()
        token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
        done = client.post(f"/console/events/{event_id}/rewind", data={"csrf_token": token})
        assert done.status_code == 303
        assert client.get(done.headers["Location"]).status_code == 200

    def test_a_rejected_link_leaves_the_browsers_session_alone(self, client, story):
        enter(client, story)
        assert client.get("/console/enter/not-a-link").status_code == 403
        assert client.get("/console/").status_code == 200
