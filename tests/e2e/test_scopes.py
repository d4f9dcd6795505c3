"""Key scopes, over every route of the app: a key without the route's scope gets 403
``insufficient_scope`` and changes nothing; a key with only that scope gets past the check.

The table is the app's URL map, not a list kept here: a new route that takes a key and is
missing from ``api.auth.ENDPOINT_SCOPES`` stops the app from starting, and a new route
that takes no key must be named in ``PUBLIC`` below, on purpose.
"""

from __future__ import annotations

import re

import pytest
from flask import Flask

from api.auth import ENDPOINT_SCOPES, KEYED_BLUEPRINTS, check_endpoint_scopes
from storage import accounts
from storage.models import AccessEntry, Export
from tests.factories import ADMIN, make_tenant, notification, record_now, title_change

#: Endpoints that take no API key: each answers for itself (signature, session, public).
PUBLIC = {
    "static",
    "api-docs.openapi_json",
    "webhooks.receive_webhook",
    "log_keys.log_keys",
    "health.healthz",
    "health.readyz",
    "metrics.metrics",
}
PUBLIC_PREFIXES = ("console.", "docs.", "api-docs.")

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def keyed_routes(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, method, a concrete path) for every route that takes a key."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint not in ENDPOINT_SCOPES:
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: f"{m.group(1)}-x", rule.rule)
        path = path.replace("entity_type-x", "person")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((rule.endpoint, method, path))
    return found


def key_with(database, org_id: str, scopes) -> str:  # type: ignore[no-untyped-def]
    with database.unit_of_work(write=True) as session:
        issued = accounts.create_api_key(session, org_id, name="scoped", scopes=scopes)
        session.commit()
    return issued.api_key


def test_every_route_is_keyed_with_a_scope_or_public_on_purpose(app):
    for rule in app.url_map.iter_rules():
        keyed = rule.endpoint in ENDPOINT_SCOPES
        public = rule.endpoint in PUBLIC or rule.endpoint.startswith(PUBLIC_PREFIXES)
        assert keyed != public, f"{rule.rule} ({rule.endpoint}): say whether it takes a key"
        if keyed:
            assert ENDPOINT_SCOPES[rule.endpoint] in accounts.SCOPES
    assert set(ENDPOINT_SCOPES) <= {rule.endpoint for rule in app.url_map.iter_rules()}


def test_an_unscoped_keyed_route_stops_the_app(app):
    blueprint = KEYED_BLUEPRINTS[0]
    app.url_map.add(type(next(app.url_map.iter_rules()))("/v1/new", endpoint=f"{blueprint}.new"))
    with pytest.raises(RuntimeError, match=f"{blueprint}.new"):
        check_endpoint_scopes(app)


def test_each_route_refuses_a_key_without_its_scope(app, client, database, settings):
    tenant = make_tenant(database, settings)
    routes = keyed_routes(app)
    assert len(routes) == len(ENDPOINT_SCOPES)
    for scope in accounts.SCOPES:
        others = [s for s in accounts.SCOPES if s != scope]
        lacking = key_with(database, tenant.org_id, others)
        only = key_with(database, tenant.org_id, [scope])
        for endpoint, method, path in routes:
            needed = ENDPOINT_SCOPES[endpoint]
            refused = client.open(
                path, method=method, headers={"Authorization": f"Bearer {lacking}"}
            )
            allowed = client.open(path, method=method, headers={"Authorization": f"Bearer {only}"})
            if needed == scope:
                assert refused.status_code == 403, (endpoint, refused.get_json())
                error = refused.get_json()["error"]
                assert error["code"] == "insufficient_scope"
                assert error["details"]["required_scope"] == scope
                assert allowed.status_code not in (401, 403, 500), (endpoint, allowed.get_json())
            else:
                assert allowed.status_code == 403, (endpoint, scope, allowed.get_json())
                assert allowed.get_json()["error"]["code"] == "insufficient_scope"


def test_refused_writes_change_nothing(client, database, settings):
    tenant = make_tenant(database, settings)
    record_now(client, tenant, database, *title_change())
    reader = {"Authorization": f"Bearer {key_with(database, tenant.org_id, ['read'])}"}
    update = client.get("/v1/events", headers=reader).get_json()["events"][0]
    with database.unit_of_work() as session:
        entries_before = session.query(AccessEntry).count()
    restore = client.post(
        "/v1/entities/person/p-1/restore",
        json={"event_id": update["id"], "actor": ADMIN},
        headers=reader,
    )
    assert restore.status_code == 403
    assert client.post("/v1/exports", json={}, headers=reader).status_code == 403
    assert client.post("/v1/console-sessions", json={}, headers=reader).status_code == 403
    assert len(client.get("/v1/events", headers=reader).get_json()["events"]) == 2
    with database.unit_of_work() as session:
        assert session.query(Export).count() == 0
        assert session.query(AccessEntry).count() == entries_before


def test_default_scopes_and_the_organisations_first_key(database, settings):
    tenant = make_tenant(database, settings)
    with database.unit_of_work(write=True) as session:
        default = accounts.create_api_key(session, tenant.org_id)
        session.commit()
        first = accounts.identify_key(session, tenant.api_key)
        made = accounts.identify_key(session, default.api_key)
    assert first is not None and first.scopes == set(accounts.SCOPES)
    assert made is not None and made.scopes == {"read", "export"}
    with database.unit_of_work(write=True) as session:
        with pytest.raises(ValueError, match="unknown scope 'admin'"):
            accounts.create_api_key(session, tenant.org_id, scopes=["read", "admin"])
        with pytest.raises(ValueError, match="at least one scope"):
            accounts.create_api_key(session, tenant.org_id, scopes=[])


def test_a_session_cannot_do_more_than_its_key(client, database, settings):
    tenant = make_tenant(database, settings)
    console_only = {"Authorization": f"Bearer {key_with(database, tenant.org_id, ['console'])}"}
    read_only = client.post("/v1/console-sessions", json={}, headers=console_only)
    assert read_only.status_code == 201
    for permission in ("export", "restore"):
        body = {"permissions": [permission], "viewer": {"id": "v", "name": "V", "email": None}}
        refused = client.post("/v1/console-sessions", json=body, headers=console_only)
        assert refused.status_code == 403, refused.get_json()
        assert refused.get_json()["error"]["details"]["required_scope"] == permission


def test_a_read_only_key_gets_no_download_link(client, database, settings):
    from worker.exports import build_export

    tenant = make_tenant(database, settings)
    record_now(client, tenant, database, notification(entity_id="p-1"))
    exporter = {"Authorization": f"Bearer {tenant.api_key}"}
    created = client.post("/v1/exports", json={}, headers=exporter).get_json()
    build_export(
        database,
        created["id"],
        settings.export_dir,
        settings.export_ttl_seconds,
        settings=settings,
    )
    reader = {"Authorization": f"Bearer {key_with(database, tenant.org_id, ['read'])}"}
    seen = client.get(f"/v1/exports/{created['id']}", headers=reader).get_json()
    assert seen["status"] == "succeeded" and seen["download_url"] is None
    link = client.get(f"/v1/exports/{created['id']}", headers=exporter).get_json()["download_url"]
    downloaded = client.get(link)
    assert downloaded.status_code == 200 and downloaded.data.startswith(b"\xef\xbb\xbf")
    downloaded.close()


def test_what_a_key_handed_on_ends_with_it(client, database, settings):
    from urllib.parse import urlsplit

    from worker.exports import build_export

    tenant = make_tenant(database, settings)
    record_now(client, tenant, database, notification(entity_id="p-1"))
    with database.unit_of_work(write=True) as session:
        made = accounts.create_api_key(session, tenant.org_id, scopes=list(accounts.SCOPES))
        session.commit()
    auth = {"Authorization": f"Bearer {made.api_key}"}
    created = client.post("/v1/exports", json={}, headers=auth).get_json()
    build_export(
        database,
        created["id"],
        settings.export_dir,
        settings.export_ttl_seconds,
        settings=settings,
    )
    link = client.get(f"/v1/exports/{created['id']}", headers=auth).get_json()["download_url"]
    browser = app_client(client)
    entered = browser.get(
        urlsplit(client.post("/v1/console-sessions", json={}, headers=auth).get_json()["url"]).path
    )
    assert entered.status_code == 303 and browser.get("/console/").status_code == 200
    with database.unit_of_work(write=True) as session:
        accounts.revoke_api_key(session, made.key_id)
        session.commit()
    refused = client.get(link)
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "invalid_link"
    assert browser.get("/console/").status_code == 401  # the session ended with its key
    assert browser.get("/console/").status_code == 401


def app_client(client):  # type: ignore[no-untyped-def]
    """A second browser on the same app (its own cookies)."""
    return client.application.test_client()
