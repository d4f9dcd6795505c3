"""The access log: what was done with the log itself, by whom, readable by the organisation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from storage import accounts
from storage.models import ApiKey
from tests.factories import ADMIN, make_tenant, record_now, title_change
from worker.exports import build_export


def entries(client, auth, **params):  # type: ignore[no-untyped-def]
    response = client.get("/v1/access-log", query_string=params, headers=auth)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_each_action_is_recorded_with_who_did_it(client, database, settings):
    tenant = make_tenant(database, settings)
    auth = {"Authorization": f"Bearer {tenant.api_key}"}
    with database.unit_of_work(write=True) as session:
        made = accounts.create_api_key(session, tenant.org_id, name="siem", scopes=["read"])
        accounts.revoke_api_key(session, made.key_id)
        session.commit()
    record_now(client, tenant, database, *title_change())
    update = client.get("/v1/events", headers=auth).get_json()["events"][0]
    restored = client.post(
        "/v1/entities/person/p-1/restore",
        json={"event_id": update["id"], "actor": ADMIN},
        headers={**auth, "X-Request-ID": "req-restore-1"},
        environ_base={"REMOTE_ADDR": "203.0.113.7"},
    )
    assert restored.status_code == 201
    export = client.post("/v1/exports", json={"entity_type": "person"}, headers=auth).get_json()
    build_export(
        database,
        export["id"],
        settings.export_dir,
        settings.export_ttl_seconds,
        settings=settings,
    )
    downloaded = client.get(f"/v1/exports/{export['id']}/download", headers=auth)
    downloaded.close()
    link = client.get(f"/v1/exports/{export['id']}", headers=auth).get_json()["download_url"]
    via_link = client.get(link)
    via_link.close()
    evidence = client.get(f"/v1/exports/{export['id']}/evidence", headers=auth)
    assert evidence.status_code == 200
    evidence.close()
    console = client.post("/v1/console-sessions", json={}, headers=auth).get_json()
    assert client.get(urlsplit(console["url"]).path).status_code == 303

    page = entries(client, auth, limit=500)
    assert page["next_cursor"] is None
    actions = [entry["action"] for entry in reversed(page["entries"])]
    assert actions == [
        "key.created",  # the organisation's first key
        "source.created",
        "key.created",
        "key.revoked",
        "entity.restored",
        "export.created",
        "export.downloaded",
        "export.downloaded",
        "export.downloaded",  # the evidence, which holds the rows too
        "console.link_created",
        "console.session_opened",
    ]
    by_action: dict[str, dict] = {}
    for entry in page["entries"]:  # newest first: the newest of each action
        by_action.setdefault(entry["action"], entry)
    me = {"type": "api_key", "key_id": by_action["export.created"]["performed_by"]["key_id"]}
    assert by_action["export.created"]["performed_by"]["type"] == "api_key"
    assert by_action["export.created"]["subject_id"] == export["id"]
    assert by_action["key.created"]["details"] == {"name": "siem", "scopes": ["read"]}
    assert by_action["key.revoked"]["performed_by"] == {"type": "cli"}
    restore = by_action["entity.restored"]
    assert restore["subject_id"] == restored.get_json()["event"]["id"]
    assert restore["ip_address"] == "203.0.113.7"
    assert restore["request_id"] == "req-restore-1"
    assert restore["details"]["restored_from"] == update["id"]
    downloads = [e for e in page["entries"] if e["action"] == "export.downloaded"]
    assert {d["performed_by"]["type"] for d in downloads} == {"api_key", "signed_link"}
    assert sorted(d["details"]["part"] for d in downloads) == ["evidence", "file", "file"]
    assert all(d["performed_by"]["key_id"] == me["key_id"] for d in downloads)
    # The restore's event names the key too.
    details = restored.get_json()["event"]["details"]
    assert details["performed_by"] == {"key_id": me["key_id"], "key_name": "default"}


def test_another_organisation_sees_none_of_it(client, database, settings):
    mine = make_tenant(database, settings)
    theirs = make_tenant(database, settings)
    client.post("/v1/exports", json={}, headers={"Authorization": f"Bearer {mine.api_key}"})
    seen = entries(client, {"Authorization": f"Bearer {theirs.api_key}"})["entries"]
    assert {entry["action"] for entry in seen} == {"key.created", "source.created"}


def test_paging_filters_and_bad_input(client, database, settings):
    tenant = make_tenant(database, settings)
    auth = {"Authorization": f"Bearer {tenant.api_key}"}
    with database.unit_of_work(write=True) as session:
        for index in range(7):
            accounts.create_api_key(session, tenant.org_id, name=f"k{index}")
        session.commit()
    seen, cursor = [], None
    while True:
        params = {"limit": 3, "action": "key.created"}
        if cursor:
            params["cursor"] = cursor
        page = entries(client, auth, **params)
        seen += page["entries"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 8 and len({entry["id"] for entry in seen}) == 8
    assert [entry["occurred_at"] for entry in seen] == sorted(
        (entry["occurred_at"] for entry in seen), reverse=True
    )
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert entries(client, auth, since=later)["entries"] == []
    for bad in ({"action": "key.exploded"}, {"limit": 0}, {"cursor": "forged"}):
        response = client.get("/v1/access-log", query_string=bad, headers=auth)
        assert response.status_code == 422, (bad, response.get_json())
    assert client.get("/v1/access-log?nope=1", headers=auth).status_code == 400


def page_cursor(client, auth) -> str:  # type: ignore[no-untyped-def]
    return entries(client, auth, limit=1)["next_cursor"]


def test_a_cursor_of_another_filter_is_refused(client, database, settings):
    tenant = make_tenant(database, settings)
    auth = {"Authorization": f"Bearer {tenant.api_key}"}
    cursor = page_cursor(client, auth)
    refused = client.get(
        "/v1/access-log", query_string={"cursor": cursor, "action": "key.created"}, headers=auth
    )
    assert refused.status_code == 422
    assert refused.get_json()["error"]["code"] == "invalid_cursor"


def test_keys_show_when_they_were_last_used(client, database, settings):
    tenant = make_tenant(database, settings)
    with database.unit_of_work() as session:
        key = session.query(ApiKey).filter_by(org_id=tenant.org_id).one()
        assert key.last_used_at is None
    client.get("/v1/events", headers={"Authorization": f"Bearer {tenant.api_key}"})
    with database.unit_of_work() as session:
        listed = accounts.list_api_keys(session, tenant.org_id)
    assert listed[0]["last_used_at"] is not None
    assert listed[0]["scopes"] == list(accounts.SCOPES)


def test_a_peer_that_is_no_ip_address_is_recorded_as_none(client, database, settings):
    """A unix socket, or a trusted proxy forwarding a name: no 5xx, the IP left empty."""
    tenant = make_tenant(database, settings)
    auth = {"Authorization": f"Bearer {tenant.api_key}"}
    record_now(client, tenant, database, *title_change())
    update = client.get("/v1/events", headers=auth).get_json()["events"][0]
    for peer in ("", "unix:/run/gunicorn.sock", "proxy.internal"):
        environ = {"REMOTE_ADDR": peer}
        export = client.post("/v1/exports", json={}, headers=auth, environ_base=environ)
        assert export.status_code == 202, export.get_json()
        restored = client.post(
            "/v1/entities/person/p-1/restore",
            json={"event_id": update["id"], "actor": ADMIN},
            headers=auth,
            environ_base=environ,
        )
        assert restored.status_code in (200, 201), restored.get_json()
        if restored.status_code == 201:
            assert restored.get_json()["event"]["ip_address"] is None
    latest = entries(client, auth, action="export.created", limit=3)["entries"]
    assert [entry["ip_address"] for entry in latest] == [None, None, None]
