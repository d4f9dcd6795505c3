"""The webhook receiver through HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import time

import pytest
from sqlalchemy import func, select

from ingest.body import NOT_A_FINITE_NUMBER, NOT_AN_EXACT_INTEGER, NOT_UNICODE, NOT_UNICODE_KEY
from storage.models import Notification
from tests.factories import make_tenant, notification, post_signed, signed_headers, unique
from tests.unit.test_signature import raw_signed_headers


@pytest.fixture
def tenant(database, settings):
    return make_tenant(database, settings)


def stored_count(database) -> int:
    with database.unit_of_work() as session:
        return session.scalar(select(func.count()).select_from(Notification))


def post_raw(client, tenant, body: bytes, headers: dict[str, str]):
    return client.post(f"/v1/webhooks/{tenant.source_id}", data=body, headers=headers)


class TestSignatureVectors:
    def body(self) -> bytes:
        return json.dumps(notification()).encode()

    def test_a_valid_signature_is_accepted(self, client, tenant, database):
        body = self.body()
        response = post_raw(client, tenant, body, signed_headers(tenant.secret, body))
        assert response.status_code == 202
        assert response.json["accepted"] == 1
        assert stored_count(database) == 1

    def test_one_valid_signature_among_two_is_enough(self, client, tenant):
        body = self.body()
        headers = signed_headers(tenant.secret, body)
        wrong = signed_headers("whsec_" + "QUJD" * 8, body, msg_id=headers["webhook-id"])
        headers["webhook-signature"] = (
            f"{wrong['webhook-signature']} {headers['webhook-signature']}"
        )
        assert post_raw(client, tenant, body, headers).status_code == 202

    def test_malformed_entries_do_not_hide_a_valid_one(self, client, tenant):
        body = self.body()
        headers = signed_headers(tenant.secret, body)
        headers["webhook-signature"] = f"garbage v1,!!! v2,abc {headers['webhook-signature']}"
        assert post_raw(client, tenant, body, headers).status_code == 202

    def test_a_tampered_body_is_refused(self, client, tenant, database):
        body = self.body()
        headers = signed_headers(tenant.secret, body)
        tampered = body.replace(b"Ada", b"Eve")
        response = post_raw(client, tenant, tampered, headers)
        assert response.status_code == 401
        assert response.json["error"]["code"] == "invalid_signature"
        assert stored_count(database) == 0

    def test_a_wrong_secret_is_refused(self, client, tenant):
        body = self.body()
        headers = signed_headers("whsec_" + "QUJD" * 8, body)
        assert post_raw(client, tenant, body, headers).status_code == 401

    @pytest.mark.parametrize("direction", [-1, 1])
    def test_a_timestamp_just_outside_the_tolerance_is_refused(self, client, tenant, direction):
        body = self.body()
        # A few seconds out: a whole-second timestamp taken a moment before the check must
        # still be outside when the check runs, however slowly the machine gets there.
        skew = direction * (300 + 3)
        headers = signed_headers(tenant.secret, body, timestamp=int(time.time()) + skew)
        assert post_raw(client, tenant, body, headers).status_code == 401

    @pytest.mark.parametrize("direction", [-1, 1])
    def test_a_timestamp_inside_the_tolerance_is_accepted(self, client, tenant, direction):
        body = self.body()
        headers = signed_headers(tenant.secret, body, timestamp=int(time.time()) + direction * 290)
        assert post_raw(client, tenant, body, headers).status_code == 202

    @pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
    def test_each_missing_header_is_refused(self, client, tenant, missing):
        body = self.body()
        headers = signed_headers(tenant.secret, body)
        del headers[missing]
        response = post_raw(client, tenant, body, headers)
        assert response.status_code == 401
        assert missing in response.json["error"]["message"]

    def test_re_serialised_json_is_refused(self, client, tenant):
        document = notification()
        signed_body = json.dumps(document).encode()
        headers = signed_headers(tenant.secret, signed_body)
        reserialised = json.dumps(document, indent=2, sort_keys=True).encode()
        assert json.loads(reserialised) == json.loads(signed_body)
        assert post_raw(client, tenant, reserialised, headers).status_code == 401

    def test_a_non_numeric_timestamp_is_refused(self, client, tenant):
        body = self.body()
        headers = signed_headers(tenant.secret, body)
        headers["webhook-timestamp"] = "1e9"
        assert post_raw(client, tenant, body, headers).status_code == 401

    def test_the_timestamp_is_verified_as_sent_not_re_formatted(self, client, tenant):
        body = self.body()
        padded = "0" + str(int(time.time()))
        response = post_raw(client, tenant, body, raw_signed_headers(tenant.secret, body, padded))
        assert response.status_code == 202, response.json

    def test_a_signature_over_the_plain_timestamp_does_not_cover_a_padded_one(
        self, client, tenant, database
    ):
        body = self.body()
        headers = signed_headers(tenant.secret, body)
        headers["webhook-timestamp"] = "0" + headers["webhook-timestamp"]
        response = post_raw(client, tenant, body, headers)
        assert response.status_code == 401
        assert response.json["error"]["message"] == "no signature matches"
        assert stored_count(database) == 0

    @pytest.mark.parametrize("template", ["+{}", " {}", "{} ", "{}.0", "-{}"])
    def test_a_timestamp_that_is_not_a_plain_integer_is_refused_even_signed_as_sent(
        self, client, tenant, template
    ):
        body = self.body()
        value = template.format(int(time.time()))
        response = post_raw(client, tenant, body, raw_signed_headers(tenant.secret, body, value))
        assert response.status_code == 401
        assert "webhook-timestamp" in response.json["error"]["message"]


class TestIdempotency:
    def test_the_same_notification_three_times_is_stored_once(self, client, tenant, database):
        document = notification()
        statuses = []
        for _ in range(3):
            response = post_signed(client, tenant, document)
            assert response.status_code == 202
            statuses.append(response.json["notifications"][0]["status"])
        assert statuses == ["queued", "duplicate", "duplicate"]
        assert stored_count(database) == 1

    def test_a_repeated_id_inside_a_batch_is_a_duplicate_of_the_first(self, client, tenant):
        first = notification()
        again = dict(first, occurred_at="2026-11-25T11:00:00Z")
        response = post_signed(client, tenant, {"notifications": [first, again, notification()]})
        assert response.status_code == 202
        assert response.json["accepted"] == 2
        assert response.json["duplicates"] == 1
        assert [n["status"] for n in response.json["notifications"]] == [
            "queued",
            "duplicate",
            "queued",
        ]

    def test_without_an_id_the_webhook_id_and_index_identify_it(self, client, tenant, database):
        first, second = notification(), notification()
        del first["id"], second["id"]
        body = json.dumps({"notifications": [first, second]}).encode()
        headers = signed_headers(tenant.secret, body, msg_id="msg-fixed")
        response = post_raw(client, tenant, body, headers)
        assert [n["id"] for n in response.json["notifications"]] == ["msg-fixed:0", "msg-fixed:1"]
        again = post_raw(client, tenant, body, signed_headers(tenant.secret, body, "msg-fixed"))
        assert again.json == {
            "accepted": 0,
            "duplicates": 2,
            "notifications": [
                {"id": "msg-fixed:0", "status": "duplicate"},
                {"id": "msg-fixed:1", "status": "duplicate"},
            ],
        }

    def test_ids_are_scoped_to_their_source(self, client, tenant, database, settings):
        other = make_tenant(database, settings)
        document = notification()
        assert post_signed(client, tenant, document).json["accepted"] == 1
        assert post_signed(client, other, document).json["accepted"] == 1


class TestPublishing:
    def test_one_message_per_request_after_the_commit(self, client, tenant, publisher, database):
        batch = {"notifications": [notification() for _ in range(5)]}
        post_signed(client, tenant, batch)
        assert len(publisher.messages) == 1
        with database.unit_of_work() as session:
            stored = set(session.scalars(select(Notification.pk)))
        assert set(publisher.messages[0]) == stored

    def test_duplicates_are_not_published_again(self, client, tenant, publisher):
        document = notification()
        post_signed(client, tenant, document)
        post_signed(client, tenant, document)
        assert len(publisher.messages) == 1

    def test_a_dead_broker_still_answers_202_with_the_row_stored(
        self, client, tenant, publisher, database
    ):
        publisher.broken = True
        response = post_signed(client, tenant, notification())
        assert response.status_code == 202
        with database.unit_of_work() as session:
            assert session.scalar(select(Notification.status)) == "queued"


class TestRejections:
    """Every 4xx the webhook can answer, each storing nothing."""

    def assert_error(self, response, status: int, code: str | None = None) -> None:
        assert response.status_code == status, response.json
        assert set(response.json) == {"error"}
        assert set(response.json["error"]) == {"code", "message", "details"}
        if code:
            assert response.json["error"]["code"] == code

    def test_unparseable_json_is_400(self, client, tenant, database):
        self.assert_error(post_signed(client, tenant, b'{"kind": '), 400, "invalid_json")
        assert stored_count(database) == 0

    def test_invalid_utf8_signed_over_its_bytes_is_400(self, client, tenant, database):
        body = b'{"kind": "\xff"}'
        response = post_raw(client, tenant, body, raw_signed_headers(tenant.secret, body))
        self.assert_error(response, 400, "invalid_json")
        assert stored_count(database) == 0

    def test_invalid_utf8_with_a_wrong_signature_is_401(self, client, tenant):
        body = b'{"kind": "\xff"}'
        headers = {
            "webhook-id": "m",
            "webhook-timestamp": str(int(time.time())),
            "webhook-signature": "v1,AAAA",
            "Content-Type": "application/json",
        }
        self.assert_error(post_raw(client, tenant, body, headers), 401, "invalid_signature")

    def test_invalid_utf8_without_a_signature_is_401(self, client, tenant):
        headers = {"Content-Type": "application/json"}
        response = post_raw(client, tenant, b"\xff\xfe\x00", headers)
        self.assert_error(response, 401, "invalid_signature")

    def test_a_hundred_thousand_nested_arrays_are_400(self, client, tenant):
        self.assert_error(post_signed(client, tenant, b"[" * 100_000), 400, "nesting_too_deep")

    def test_deep_but_parseable_nesting_is_400(self, client, tenant):
        document = notification(properties={"x": json.loads("[" * 40 + "]" * 40)})
        self.assert_error(post_signed(client, tenant, document), 400, "nesting_too_deep")

    @pytest.mark.parametrize(
        "document",
        [
            [],
            "text",
            3,
            {"notifications": "x"},
            {"notifications": []},
            {"notifications": [1] * 1001},
        ],
    )
    def test_a_wrong_top_level_shape_is_400(self, client, tenant, document):
        self.assert_error(post_signed(client, tenant, document), 400, "invalid_shape")

    def test_duplicate_keys_are_400(self, client, tenant):
        body = b'{"kind": "snapshot", "kind": "delete"}'
        self.assert_error(post_signed(client, tenant, body), 400, "duplicate_key")

    def test_nan_is_400(self, client, tenant):
        self.assert_error(post_signed(client, tenant, b'{"sequence": NaN}'), 400, "invalid_json")

    def test_an_unknown_source_is_404(self, client, tenant):
        body = json.dumps(notification()).encode()
        response = client.post(
            "/v1/webhooks/src_missing", data=body, headers=signed_headers(tenant.secret, body)
        )
        self.assert_error(response, 404, "not_found")

    def test_a_body_one_byte_over_the_limit_is_413(self, client, tenant, settings, database):
        body = b" " * (settings.max_body_bytes + 1)
        self.assert_error(post_signed(client, tenant, body), 413, "body_too_large")
        assert stored_count(database) == 0

    def post_chunked(self, client, tenant, body: bytes):
        headers = signed_headers(tenant.secret, body)
        return client.post(
            f"/v1/webhooks/{tenant.source_id}",
            input_stream=io.BytesIO(body),
            headers={**headers, "Transfer-Encoding": "chunked"},
            # What gunicorn sets for a chunked request body.
            environ_overrides={"wsgi.input_terminated": True},
        )

    def test_a_chunked_body_over_the_limit_is_413(self, client, tenant, settings, database):
        body = b" " * (settings.max_body_bytes + 1)
        self.assert_error(self.post_chunked(client, tenant, body), 413, "body_too_large")
        assert stored_count(database) == 0

    def test_a_chunked_body_at_the_limit_is_read_whole(self, client, tenant, settings):
        document = json.dumps(notification()).encode()
        body = document + b" " * (settings.max_body_bytes - len(document))
        assert self.post_chunked(client, tenant, body).status_code == 202

    @pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
    def test_a_body_that_is_not_json_is_415(self, client, tenant, content_type):
        body = json.dumps(notification()).encode()
        headers = signed_headers(tenant.secret, body)
        headers["Content-Type"] = content_type
        self.assert_error(post_raw(client, tenant, body, headers), 415, "unsupported_media_type")

    def test_a_charset_parameter_is_accepted(self, client, tenant):
        body = json.dumps(notification()).encode()
        headers = signed_headers(tenant.secret, body)
        headers["Content-Type"] = "application/json; charset=utf-8"
        assert post_raw(client, tenant, body, headers).status_code == 202

    def test_an_invalid_notification_is_422_with_field_paths(self, client, tenant):
        document = notification(entity={"type": "robot", "id": "r1"})
        response = post_signed(client, tenant, document)
        self.assert_error(response, 422, "validation_failed")
        assert response.json["error"]["details"] == {
            "entity": {
                "type": ["Must be one of: app, person, team, device, license, subscription."]
            }
        }

    def test_one_invalid_notification_rejects_the_whole_batch(self, client, tenant, database):
        bad = notification(kind="teleport")
        response = post_signed(client, tenant, {"notifications": [notification(), bad]})
        self.assert_error(response, 422)
        assert list(response.json["error"]["details"]) == ["1"]
        assert "kind" in response.json["error"]["details"]["1"]
        assert stored_count(database) == 0

    def test_unknown_routes_and_methods_use_the_error_shape(self, client):
        self.assert_error(client.get("/nowhere"), 404, "not_found")
        response = client.get("/v1/webhooks/src_x")
        self.assert_error(response, 405, "method_not_allowed")
        assert "POST" in response.headers["Allow"]


class TestNotificationValidation:
    """Each rule of the notification object answers 422 and stores nothing."""

    @pytest.mark.parametrize(
        "fields, path",
        [
            ({"colour": "red"}, "colour"),
            ({"relationships": {"teams": ["t1"]}}, "relationships"),
            ({"relationships": {"apps": {"add": ["a1"]}}}, "relationships"),
            ({"occurred_at": "2026-11-25T10:00:00"}, "occurred_at"),
            ({"occurred_at": "yesterday"}, "occurred_at"),
            ({"sequence": -1}, "sequence"),
            ({"sequence": 1.5}, "sequence"),
            ({"sequence": "3"}, "sequence"),
            ({"origin": "fax"}, "origin"),
            ({"ip_address": "300.1.1.1"}, "ip_address"),
            ({"ip_address": "fe80::1%eth0"}, "ip_address"),
            ({"ip_address": "fe80::1%1"}, "ip_address"),
            ({"actor": {"type": "user"}}, "actor"),
            ({"actor": {"type": "robot", "id": "r"}}, "actor"),
            ({"id": "x" * 201}, "id"),
            ({"entity": {"type": "person", "id": "p" * 201}}, "entity"),
            ({"properties": {"name": "a\u0000b"}}, "properties"),
            ({"event": {"type": "person.workflow_launched"}}, "event"),
            ({"parent": {"type": "app", "id": "a1"}}, "parent"),
            ({"properties": {"k" * 201: 1}}, "properties"),
            ({"properties": {"big": "x" * 20_000}}, "properties"),
        ],
    )
    def test_a_snapshot_field_rule(self, client, tenant, database, fields, path):
        response = post_signed(client, tenant, notification(**fields))
        assert response.status_code == 422, response.json
        assert path in response.json["error"]["details"]
        assert stored_count(database) == 0

    def test_properties_on_a_delete_are_refused(self, client, tenant):
        document = notification(kind="delete", properties={"name": "x"})
        response = post_signed(client, tenant, document)
        assert response.status_code == 422
        assert "properties" in response.json["error"]["details"]

    def test_a_license_needs_its_parent(self, client, tenant):
        document = notification("license", parent=None)
        del document["parent"]
        response = post_signed(client, tenant, document)
        assert response.status_code == 422
        assert "parent" in response.json["error"]["details"]

    def test_an_action_must_belong_to_the_entity_type(self, client, tenant):
        document = notification(
            "person", kind="event", event={"type": "app.file_uploaded", "details": {}}
        )
        assert post_signed(client, tenant, document).status_code == 422

    def test_details_over_16_kib_are_refused(self, client, tenant):
        document = notification(
            "app", kind="event", event={"type": "app.file_uploaded", "details": {"x": "y" * 17000}}
        )
        assert post_signed(client, tenant, document).status_code == 422

    def test_a_patch_may_not_add_and_remove_the_same_id(self, client, tenant):
        document = notification(
            kind="patch", relationships={"apps": {"add": ["a1"], "remove": ["a1"]}}
        )
        assert post_signed(client, tenant, document).status_code == 422

    def test_every_kind_of_valid_notification_is_accepted(self, client, tenant):
        person = unique("p")
        batch = [
            notification(
                "person", person, properties={"name": "Ada"}, relationships={"apps": ["a1"]}
            ),
            notification(
                "person",
                person,
                kind="patch",
                properties={"title": None},
                relationships={"apps": {"add": ["a2"], "remove": ["a1"]}},
            ),
            notification("app", "a1", relationships={"org": True, "persons": [], "teams": ["t1"]}),
            notification(
                "license",
                "l1",
                parent={"type": "app", "id": "a1"},
                relationships={"assignees": [person]},
            ),
            notification(
                "person",
                person,
                kind="event",
                event={"type": "person.workflow_launched", "details": {"workflow": "offboard"}},
            ),
            notification("device", "d1", kind="delete"),
            notification(
                "team",
                "t1",
                kind="baseline",
                actor={"type": "user", "id": person, "name": "Ada", "email": "ada@example.com"},
                ip_address="2001:db8::1",
                origin="csv",
                sequence=7,
            ),
        ]
        for item in batch:
            if item["kind"] in ("delete", "event"):
                item.pop("properties", None)
        response = post_signed(client, tenant, {"notifications": batch})
        assert response.status_code == 202, response.json
        assert response.json["accepted"] == len(batch)


def with_raw(document: dict, **literals: str) -> bytes:
    """``document`` as JSON, each string ``"@name"`` replaced by the raw JSON given as ``name``:
    how to send JSON (``1e999``, 5,000 digits, ``"\\ud800"``) that json.dumps cannot write."""
    text = json.dumps(document)
    for name, literal in literals.items():
        assert f'"@{name}"' in text
        text = text.replace(f'"@{name}"', literal)
    return text.encode()


class TestValuesNoStoreCanHold:
    """Refused at the door with 422 and the field's path, on SQLite and PostgreSQL alike."""

    @pytest.mark.parametrize(
        "literal, message",
        [
            ("9007199254740992", NOT_AN_EXACT_INTEGER),
            ("-9007199254740992", NOT_AN_EXACT_INTEGER),
            ("9" * 5000, NOT_AN_EXACT_INTEGER),
            ("1e999", NOT_A_FINITE_NUMBER),
            ('"Ada \\ud800"', NOT_UNICODE),
            ('"\\udfff"', NOT_UNICODE),
        ],
    )
    def test_a_property_value_is_refused_at_its_path(
        self, client, tenant, database, literal, message
    ):
        body = with_raw(notification(properties={"name": "Ada", "bad": "@bad"}), bad=literal)
        response = post_signed(client, tenant, body)
        assert response.status_code == 422, response.json
        assert response.json["error"]["code"] == "validation_failed"
        assert response.json["error"]["details"] == {"properties": {"bad": [message]}}
        assert stored_count(database) == 0

    def test_a_lone_surrogate_in_a_key_is_refused_at_that_key(self, client, tenant, database):
        body = json.dumps(notification(properties={"@k": 1})).replace('"@k"', '"k\\ud800"')
        response = post_signed(client, tenant, body.encode())
        assert response.status_code == 422, response.json
        assert response.json["error"]["details"] == {"properties": {"k\\ud800": [NOT_UNICODE_KEY]}}
        assert stored_count(database) == 0

    @pytest.mark.parametrize(
        "fields, path",
        [
            ({"id": "@bad"}, {"id": [NOT_UNICODE]}),
            ({"entity": {"type": "person", "id": "@bad"}}, {"entity": {"id": [NOT_UNICODE]}}),
            (
                {"relationships": {"apps": ["a1", "@bad"]}},
                {"relationships": {"apps": {"1": [NOT_UNICODE]}}},
            ),
            (
                {"actor": {"type": "user", "id": "p1", "name": "@bad"}},
                {"actor": {"name": [NOT_UNICODE]}},
            ),
        ],
    )
    def test_a_lone_surrogate_anywhere_is_refused(self, client, tenant, database, fields, path):
        body = with_raw(notification(**fields), bad='"x\\udbff"')
        response = post_signed(client, tenant, body)
        assert response.status_code == 422, response.json
        assert response.json["error"]["details"] == path
        assert stored_count(database) == 0

    @pytest.mark.parametrize("literal", ["9007199254740992", "9" * 5000])
    def test_a_sequence_past_the_i_json_range_is_refused(self, client, tenant, database, literal):
        response = post_signed(client, tenant, with_raw(notification(sequence="@s"), s=literal))
        assert response.status_code == 422, response.json
        assert response.json["error"]["details"] == {"sequence": [NOT_AN_EXACT_INTEGER]}
        assert stored_count(database) == 0

    def test_the_largest_i_json_sequence_is_accepted(self, client, tenant):
        response = post_signed(client, tenant, notification(sequence=2**53 - 1))
        assert response.status_code == 202, response.json

    def test_a_batch_is_keyed_by_the_index_of_the_notification(self, client, tenant, database):
        batch = {"notifications": [notification(), notification(properties={"n": "@n"})]}
        response = post_signed(client, tenant, with_raw(batch, n="-1e400"))
        assert response.status_code == 422, response.json
        assert response.json["error"]["details"] == {
            "1": {"properties": {"n": [NOT_A_FINITE_NUMBER]}}
        }
        assert stored_count(database) == 0

    def test_a_surrogate_pair_is_an_ordinary_character(self, client, tenant, database):
        body = with_raw(notification(properties={"name": "@n"}), n='"Ada \\ud83d\\ude00"')
        response = post_signed(client, tenant, body)
        assert response.status_code == 202, response.json
        with database.unit_of_work() as session:
            payload = session.scalar(select(Notification.payload))
        assert payload["properties"]["name"] == "Ada \U0001f600"
