"""Rotation without downtime: ``SECRET_KEY`` with ``SECRET_KEY_FALLBACKS``, source secrets
with an overlap, and disabling a source."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from api.app import create_app
from storage import accounts
from storage.credentials import SealedWithUnknownKey, SecretBox
from storage.models import Notification, Source
from tests.factories import (
    Tenant,
    make_tenant,
    notification,
    post_signed,
    record_now,
    signed_headers,
)
from worker.exports import build_export


def app_with(settings, database, publisher, **changes):  # type: ignore[no-untyped-def]
    return create_app(
        dataclasses.replace(settings, **changes), database=database, publish=publisher
    )


def notifications_stored(database) -> int:  # type: ignore[no-untyped-def]
    with database.unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(Notification)) or 0


def post_with_secret(client, tenant: Tenant, secret: str):  # type: ignore[no-untyped-def]
    body = json.dumps(notification()).encode()
    return client.post(
        f"/v1/webhooks/{tenant.source_id}", data=body, headers=signed_headers(secret, body)
    )


class TestSecretKeyRotation:
    def test_fallbacks_keep_everything_working_and_removing_them_fails_cleanly(
        self, settings, database, publisher
    ):
        old = app_with(settings, database, publisher, secret_key="key-one")
        old_client = old.test_client()
        tenant = make_tenant(database, dataclasses.replace(settings, secret_key="key-one"))
        auth = {"Authorization": f"Bearer {tenant.api_key}"}
        record_now(old_client, tenant, database, notification(), notification())
        cursor = old_client.get("/v1/events?limit=1", headers=auth).get_json()["next_cursor"]
        export = old_client.post("/v1/exports", json={}, headers=auth).get_json()
        build_export(
            database,
            export["id"],
            settings.export_dir,
            settings.export_ttl_seconds,
            settings=dataclasses.replace(settings, secret_key="key-one"),
        )
        link = old_client.get(f"/v1/exports/{export['id']}", headers=auth).get_json()
        download = urlsplit(link["download_url"])
        console_url = urlsplit(
            old_client.post("/v1/console-sessions", json={}, headers=auth).get_json()["url"]
        ).path
        signed_in = old.test_client()
        assert (
            signed_in.get(
                urlsplit(
                    old_client.post("/v1/console-sessions", json={}, headers=auth).get_json()["url"]
                ).path
            ).status_code
            == 303
        )
        session_cookie = signed_in.get_cookie("auditlog_console", path="/console")
        assert session_cookie is not None

        rotated = app_with(
            settings, database, publisher, secret_key="key-two", secret_key_fallbacks=("key-one",)
        )
        retired = app_with(settings, database, publisher, secret_key="key-two")

        def works(app) -> dict[str, int]:  # type: ignore[no-untyped-def]
            client = app.test_client()
            client.set_cookie(
                "auditlog_console", session_cookie.value, path="/console", domain="localhost"
            )
            page = client.get(f"/v1/events?limit=1&cursor={cursor}", headers=auth)
            fetched = client.get(f"{download.path}?{download.query}")
            fetched.close()
            return {
                "webhook": post_signed(client, tenant, notification()).status_code,
                "cursor": page.status_code,
                "link": fetched.status_code,
                "console": client.get("/console/").status_code,
            }

        assert works(rotated) == {"webhook": 202, "cursor": 200, "link": 200, "console": 200}
        # What the rotated app signs now, it signs with the new key: the retired app (the
        # new key alone) accepts it.
        rotated_client = rotated.test_client()
        new_cursor = rotated_client.get("/v1/events?limit=1", headers=auth).get_json()
        new_link = urlsplit(
            rotated_client.get(f"/v1/exports/{export['id']}", headers=auth).get_json()[
                "download_url"
            ]
        )
        new_console = urlsplit(
            rotated_client.post("/v1/console-sessions", json={}, headers=auth).get_json()["url"]
        ).path
        retired_client = retired.test_client()
        page = retired_client.get(
            f"/v1/events?limit=1&cursor={new_cursor['next_cursor']}", headers=auth
        )
        assert page.status_code == 200
        fetched = retired_client.get(f"{new_link.path}?{new_link.query}")
        fetched.close()
        assert fetched.status_code == 200
        assert retired_client.get(new_console).status_code == 303
        assert rotated.test_client().get(console_url).status_code == 303
        stored = notifications_stored(database)
        refused = works(retired)
        assert refused["webhook"] == 401 and refused["link"] == 403
        assert refused["cursor"] == 422  # an altered cursor's answer: not one we issued
        assert refused["console"] in (302, 303, 401)  # no session: the way in, not a page
        assert notifications_stored(database) == stored

    def test_reseal_moves_stored_secrets_to_the_new_key(self, settings, database, publisher):
        tenant = make_tenant(database, dataclasses.replace(settings, secret_key="key-one"))
        with database.unit_of_work(write=True) as session:
            counts = accounts.reseal_secrets(session, SecretBox(["key-two", "key-one"]))
            session.commit()
        assert counts["resealed_source_secrets"] == 1
        with database.unit_of_work(write=True) as session:
            again = accounts.reseal_secrets(session, SecretBox(["key-two", "key-one"]))
            with pytest.raises(SealedWithUnknownKey):
                SecretBox("key-one").open(session.get(Source, tenant.source_id).secret_encrypted)
        assert again["resealed_source_secrets"] == 0
        retired = app_with(settings, database, publisher, secret_key="key-two")
        assert post_signed(retired.test_client(), tenant, notification()).status_code == 202

    def test_secret_box_opens_values_sealed_before_hkdf(self):
        import base64
        import hashlib

        from cryptography.fernet import Fernet

        legacy = hashlib.sha256(b"auditlog/source-secret/old-key").digest()
        sealed = Fernet(base64.urlsafe_b64encode(legacy)).encrypt(b"whsec_x")
        box = SecretBox("old-key")
        assert box.open(sealed) == "whsec_x"
        assert not box.is_current(sealed) and box.is_current(box.reseal(sealed))


class TestSourceSecretRotation:
    def test_both_secrets_verify_during_the_overlap_then_only_the_new(
        self, client, database, settings
    ):
        tenant = make_tenant(database, settings)
        assert post_signed(client, tenant, notification()).status_code == 202  # now cached
        started = datetime.now(UTC)
        overlap = timedelta(seconds=2)
        with database.unit_of_work(write=True) as session:
            issued = accounts.rotate_source_secret(
                session, SecretBox(settings.secret_keys), tenant.source_id, overlap, started
            )
            session.commit()
        assert issued.secret != tenant.secret
        assert post_with_secret(client, tenant, tenant.secret).status_code == 202
        assert post_with_secret(client, tenant, issued.secret).status_code == 202
        time.sleep(max(0.0, (started + overlap - datetime.now(UTC)).total_seconds()) + 0.05)
        stored = notifications_stored(database)
        # The cached source still holds the old secret, but its overlap has ended.
        refused = post_with_secret(client, tenant, tenant.secret)
        assert refused.status_code == 401
        assert refused.get_json()["error"]["code"] == "invalid_signature"
        assert notifications_stored(database) == stored
        assert post_with_secret(client, tenant, issued.secret).status_code == 202

    def test_a_replaced_secret_admits_nothing_even_from_a_cached_source(
        self, client, database, settings
    ):
        tenant = make_tenant(database, settings)
        assert post_signed(client, tenant, notification()).status_code == 202  # now cached
        with database.unit_of_work(write=True) as session:
            issued = accounts.rotate_source_secret(  # a leaked secret: no overlap
                session,
                SecretBox(settings.secret_keys),
                tenant.source_id,
                timedelta(0),
                datetime.now(UTC),
            )
            session.commit()
        stored = notifications_stored(database)
        refused = post_with_secret(client, tenant, tenant.secret)
        assert refused.status_code == 401, refused.get_json()
        assert notifications_stored(database) == stored
        assert post_with_secret(client, tenant, issued.secret).status_code == 202

    def test_a_former_secret_no_key_opens_does_not_lock_the_source_out(
        self, settings, database, publisher
    ):
        tenant = make_tenant(database, dataclasses.replace(settings, secret_key="key-one"))
        now = datetime.now(UTC)
        with database.unit_of_work(write=True) as session:
            # Under key-two alone: the current secret (sealed by key-one) cannot be opened,
            # so the rotation keeps no overlap instead of a secret nobody can use.
            issued = accounts.rotate_source_secret(
                session, SecretBox("key-two"), tenant.source_id, timedelta(hours=1), now
            )
            session.commit()
            row = session.get(Source, tenant.source_id)
            assert row.previous_secret_encrypted is None
            # A former secret sealed by a retired key, still in its overlap, is skipped.
            row.previous_secret_encrypted = SecretBox("key-zero").seal(tenant.secret)
            row.previous_secret_expires_at = now + timedelta(hours=1)
            session.commit()
        client = app_with(settings, database, publisher, secret_key="key-two").test_client()
        assert post_with_secret(client, tenant, issued.secret).status_code == 202
        assert post_with_secret(client, tenant, tenant.secret).status_code == 401
        with database.unit_of_work(write=True) as session:
            row = session.get(Source, tenant.source_id)
            row.previous_secret_expires_at = now - timedelta(seconds=1)
            session.commit()
            # Past its overlap a former secret is dropped by reseal, not resealed.
            accounts.reseal_secrets(session, SecretBox("key-two"))
            session.commit()
            assert session.get(Source, tenant.source_id).previous_secret_encrypted is None

    def test_rotating_twice_ends_the_oldest_at_once(self, client, database, settings):
        tenant = make_tenant(database, settings)
        box, now = SecretBox(settings.secret_keys), datetime.now(UTC)
        with database.unit_of_work(write=True) as session:
            second = accounts.rotate_source_secret(
                session, box, tenant.source_id, timedelta(hours=1), now
            )
            third = accounts.rotate_source_secret(
                session, box, tenant.source_id, timedelta(hours=1), now
            )
            session.commit()
        assert post_with_secret(client, tenant, tenant.secret).status_code == 401
        assert post_with_secret(client, tenant, second.secret).status_code == 202
        assert post_with_secret(client, tenant, third.secret).status_code == 202


class TestDisabledSource:
    def test_a_disabled_source_answers_403_and_stores_nothing(self, client, database, settings):
        tenant = make_tenant(database, settings)
        assert post_signed(client, tenant, notification()).status_code == 202  # now cached
        with database.unit_of_work(write=True) as session:
            accounts.disable_source(session, tenant.source_id, datetime.now(UTC))
            session.commit()
        stored = notifications_stored(database)
        for _ in range(2):  # the cached copy: the storing transaction refuses it
            response = post_signed(client, tenant, notification())
            assert response.status_code == 403
            assert response.get_json()["error"]["code"] == "source_disabled"
        # An unsigned request fails the cached secret and reads the source again.
        unsigned = client.post(f"/v1/webhooks/{tenant.source_id}", json=notification(), headers={})
        assert unsigned.status_code == 403
        assert notifications_stored(database) == stored
