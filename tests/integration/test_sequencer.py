"""The sequencer and the feed against real databases: gap-free seq in commit order."""

from __future__ import annotations

import base64
from contextlib import contextmanager
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select

from storage import merkle, notes, tlog
from storage.canonical import event_leaf
from storage.models import Event, LogLeaf
from tests.factories import make_tenant, notification, post_signed, record_now
from worker import processing, sequencer


@pytest.fixture
def tenant(database, settings):
    return make_tenant(database, settings)


def auth(tenant):
    return {"Authorization": f"Bearer {tenant.api_key}"}


def follow(client, tenant, after=0, limit=1000):
    """Every event the feed delivers after ``after``, following ``next_after``."""
    delivered = []
    while True:
        page = client.get(f"/v1/feed?after={after}&limit={limit}", headers=auth(tenant))
        assert page.status_code == 200, page.get_json()
        body = page.get_json()
        delivered += body["events"]
        if body["next_after"] == after:
            return delivered
        after = body["next_after"]


class TestSequencing:
    def test_every_event_gets_the_next_seq_of_its_organisation(
        self, client, tenant, database, settings
    ):
        other = make_tenant(database, settings)
        record_now(client, tenant, database, *[notification() for _ in range(5)])
        record_now(client, other, database, *[notification() for _ in range(3)])
        before = client.get("/v1/events", headers=auth(tenant)).get_json()["events"]
        assert {event["seq"] for event in before} == {None}
        sequencer.sequence_pending(database, settings)
        mine = follow(client, tenant)
        theirs = follow(client, other)
        assert [e["seq"] for e in mine] == list(range(1, len(mine) + 1))
        assert [e["seq"] for e in theirs] == list(range(1, len(theirs) + 1))
        listed = client.get("/v1/events?limit=500", headers=auth(tenant)).get_json()["events"]
        assert sorted(e["seq"] for e in listed) == [e["seq"] for e in mine]
        assert {e["id"] for e in mine}.isdisjoint({e["id"] for e in theirs})

    def test_the_stored_tree_is_the_tree_of_the_events(self, client, tenant, database, settings):
        record_now(client, tenant, database, *[notification() for _ in range(7)])
        sequencer.sequence_pending(database, settings)
        delivered = follow(client, tenant)
        hashes = [merkle.leaf_hash(event_leaf(event)) for event in delivered]
        with database.unit_of_work() as session:
            tree = tlog.tree_of(session, tenant.org_id)
            stored = tlog.leaf_hashes(session, tenant.org_id, 1, tree.size)
        assert stored == hashes
        assert bytes(tree.root_hash) == merkle.root(
            len(hashes), lambda lv, ix: _naive(hashes, lv, ix)
        )

    def test_a_checkpoint_is_signed_and_verifies_with_the_published_key(
        self, client, tenant, database, settings
    ):
        record_now(client, tenant, database, *[notification() for _ in range(4)])
        sequencer.sequence_pending(database, settings)
        checkpoint = client.get("/v1/log/checkpoint", headers=auth(tenant)).get_json()
        keys = client.get("/v1/log/keys").get_json()["keys"]
        verifiers = [notes.NoteVerifier(key["vkey"]) for key in keys]
        text = notes.open_note(checkpoint["checkpoint"], verifiers)
        origin, size, root = notes.parse_checkpoint(text)
        assert origin == f"{settings.log_origin}/{tenant.org_id}"
        assert size == checkpoint["tree_size"] == len(follow(client, tenant))
        assert base64.b64encode(root).decode() == checkpoint["root_hash"]

    def test_proofs_verify_against_the_checkpoint(self, client, tenant, database, settings):
        for _ in range(3):
            record_now(client, tenant, database, *[notification() for _ in range(3)])
            # Checkpoints at several sizes: each pass is due at once here.
            sequencer.sequence_pending(database, settings)
            with database.unit_of_work(write=True) as session:
                sequencer.sign_due_checkpoints(session, settings, datetime.now(UTC), every=_zero())
                session.commit()
        delivered = follow(client, tenant)
        checkpoint = client.get("/v1/log/checkpoint", headers=auth(tenant)).get_json()
        size, root = checkpoint["tree_size"], base64.b64decode(checkpoint["root_hash"])
        for event in delivered:
            proof = client.get(
                f"/v1/log/proof/inclusion?seq={event['seq']}&tree_size={size}",
                headers=auth(tenant),
            ).get_json()
            hashes = [base64.b64decode(h) for h in proof["hashes"]]
            leaf = merkle.leaf_hash(event_leaf(event))
            assert merkle.verify_inclusion(event["seq"] - 1, size, leaf, hashes, root)
        with database.unit_of_work() as session:
            first = tlog.latest_checkpoint(session, tenant.org_id)
            sizes = sorted(
                s
                for (s,) in session.execute(
                    select(tlog.LogCheckpoint.tree_size).where(
                        tlog.LogCheckpoint.org_id == tenant.org_id
                    )
                )
            )
        assert first is not None and len(sizes) >= 2
        older = tlog_checkpoint(database, tenant.org_id, sizes[0])
        proof = client.get(
            f"/v1/log/proof/consistency?first={sizes[0]}&second={size}", headers=auth(tenant)
        ).get_json()
        assert merkle.verify_consistency(
            sizes[0], size, older.root_hash, root, [base64.b64decode(h) for h in proof["hashes"]]
        )

    def test_sizes_beyond_the_latest_checkpoint_are_422(self, client, tenant, database, settings):
        record_now(client, tenant, database, notification())
        sequencer.sequence_pending(database, settings)
        size = client.get("/v1/log/checkpoint", headers=auth(tenant)).get_json()["tree_size"]
        for query in (
            f"/v1/log/proof/inclusion?seq=1&tree_size={size + 1}",
            f"/v1/log/proof/inclusion?seq={size + 1}&tree_size={size}",
            f"/v1/log/proof/consistency?first=1&second={size + 1}",
        ):
            assert client.get(query, headers=auth(tenant)).status_code == 422

    def test_before_any_checkpoint_the_log_says_so(self, client, tenant):
        response = client.get("/v1/log/checkpoint", headers=auth(tenant))
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "no_checkpoint"

    def test_the_feed_waits_for_new_events(self, client, tenant):
        started = datetime.now(UTC)
        page = client.get("/v1/feed?after=0&wait=0.5", headers=auth(tenant)).get_json()
        assert page == {"events": [], "next_after": 0}
        assert (datetime.now(UTC) - started).total_seconds() >= 0.5


@pytest.mark.postgres
class TestCommitOrderOnPostgres:
    def test_an_open_transaction_holding_a_low_id_is_never_skipped_nor_doubled(
        self, tmp_path, postgres_url
    ):
        from api.app import create_app
        from storage.db import Database
        from tests.factories import make_settings

        settings = make_settings(tmp_path / "var", database_url=postgres_url)
        database = Database(postgres_url)
        client = create_app(settings, database=database, publish=lambda pks: None).test_client()
        tenant = make_tenant(database, settings)
        # Two notifications queued; the first is recorded in a transaction left open.
        post_signed(client, tenant, notification())
        post_signed(client, tenant, notification())
        with database.unit_of_work() as session:
            first_pk, second_pk = session.scalars(
                select(processing.Notification.pk).order_by(processing.Notification.pk)
            ).all()
        held = database.unit_of_work(write=True)
        session = held.__enter__()
        try:
            batch = processing.lock_queued(session, [first_pk])
            processing.record_notifications(session, batch, datetime.now(UTC))
            held_ids = list(session.scalars(select(Event.id)))
            # Meanwhile a later transaction records and commits the second.
            processing.process_notifications(database, [second_pk], 1, catch_up=False)
            sequencer.sequence_pending(database, settings)
            seen_while_open = follow(client, tenant)
            assert all(int(e["id"][4:], 16) not in held_ids for e in seen_while_open)
            session.commit()
        finally:
            held.__exit__(None, None, None)
        sequencer.sequence_pending(database, settings)
        after = seen_while_open[-1]["seq"] if seen_while_open else 0
        rest = follow(client, tenant, after=after)
        delivered = seen_while_open + rest
        with database.unit_of_work() as check:
            every = set(check.scalars(select(Event.id)))
            leaves = check.scalars(select(LogLeaf.seq).order_by(LogLeaf.seq)).all()
        assert sorted(int(e["id"][4:], 16) for e in delivered) == sorted(every)
        assert [e["seq"] for e in delivered] == list(range(1, len(every) + 1)) == list(leaves)
        database.engine.dispose()


def _zero():
    from datetime import timedelta

    return timedelta(0)


def _naive(hashes, level, index):
    """A complete subtree's hash straight from the leaves (for comparison)."""
    span = hashes[index * 2**level : (index + 1) * 2**level]
    while len(span) > 1:
        span = [merkle.node_hash(span[i], span[i + 1]) for i in range(0, len(span), 2)]
    return span[0]


def tlog_checkpoint(database, org_id, size):
    with database.unit_of_work() as session:
        return tlog.checkpoint_at(session, org_id, size)


class TestFoundInReview:
    def test_a_float_that_jsonb_turns_into_a_big_integer_is_sequenced(
        self, client, tenant, database, settings
    ):
        record_now(client, tenant, database, notification(properties={"name": "A", "n": 1e16}))
        record_now(client, tenant, database, notification(properties={"name": "B"}))
        outcome = sequencer.sequence_pending(database, settings)
        delivered = follow(client, tenant)
        assert outcome.events == len(delivered) >= 2
        created = next(e for e in delivered if e["new_value"] and e["new_value"].get("n"))
        assert created["new_value"]["n"] == 1e16

    def test_the_stored_leaves_are_those_of_the_served_events_for_every_form_of_value(
        self, client, tenant, database, settings
    ):
        # The sequencer reads events on the driver's connection, not through the ORM's
        # column types: addresses, instants and numbers of each form must give the leaf the
        # API's document gives, or the log check and every proof would fail.
        addresses = ["203.0.113.7", "2001:db8::1", "::ffff:192.0.2.1", "2001:0db8:0:0:0:0:0:02"]
        instants = [
            "2026-11-25T10:00:00Z",
            "2026-11-25T10:00:00.120Z",
            "2026-11-25T10:00:00.123456Z",
            "2026-11-25T15:30:00.5+05:30",
        ]
        values = [1.5, 1e16, 1e-7, 2**53 - 1, -0.0, "Zoë 🎉", {"ключ": [1, 2.25, None]}, True]
        documents = [
            notification(
                entity_id=f"p-{index}",
                occurred_at=instants[index % len(instants)],
                ip_address=addresses[index % len(addresses)],
                actor={"type": "user", "id": "u-1", "name": "Zoë", "email": None},
                properties={"name": f"P {index}", "value": value, "😀": index},
            )
            for index, value in enumerate(values)
        ]
        documents.append(notification(entity_id="p-nameless", properties={"title": "no name"}))
        documents.append(
            notification(
                kind="event",
                entity_id="p-0",
                event={"type": "person.workflow_launched", "details": {"n": 2.5, "big": 1e300}},
            )
        )
        record_now(client, tenant, database, *documents)
        sequencer.sequence_pending(database, settings)
        delivered = follow(client, tenant)
        assert len(delivered) >= len(documents)
        assert {e["ip_address"] for e in delivered} >= {"203.0.113.7", "2001:db8::1", "2001:db8::2"}
        with database.unit_of_work() as session:
            stored = tlog.leaf_hashes(session, tenant.org_id, 1, len(delivered))
        assert stored == [merkle.leaf_hash(event_leaf(event)) for event in delivered]

    def test_a_checkpoint_that_cannot_be_signed_does_not_undo_sequencing(
        self, client, tenant, database, settings
    ):
        import dataclasses

        record_now(client, tenant, database, notification())
        broken = dataclasses.replace(settings, log_signing_key="PRIVATE+KEY+not+a+key")
        outcome = sequencer.sequence_pending(database, broken)
        assert outcome.events >= 1 and outcome.checkpoints == []
        assert [e["seq"] for e in follow(client, tenant)] == list(range(1, outcome.events + 1))
        assert client.get("/v1/log/checkpoint", headers=auth(tenant)).status_code == 404
        assert sequencer.sequence_pending(database, settings).checkpoints

    def test_the_horizon_moves_under_a_backlog_too(self, client, tenant, database, settings):
        from datetime import UTC, datetime

        record_now(client, tenant, database, *[notification() for _ in range(3)])
        with database.unit_of_work(write=True) as session:
            sequencer.sequence_events(session, datetime.now(UTC), limit=1)
            session.commit()
        with database.unit_of_work() as session:
            assert 0 < sequencer.horizon(session)


class TestNodeReads:
    """A proof or a root costs one query of ``log_nodes``, whatever the tree's size: read one
    node at a time, a proof in a tree of 100,000 was two dozen round trips."""

    @pytest.fixture
    def sequenced(self, client, tenant, database, settings):
        """A tree of 100 leaves (depth 7) with checkpoints at 60 and 100."""
        for count in (60, 40):
            record_now(
                client, tenant, database, {"notifications": [notification() for _ in range(count)]}
            )
            sequencer.sequence_pending(database, settings)
            with database.unit_of_work(write=True) as session:
                sequencer.sign_due_checkpoints(session, settings, datetime.now(UTC), every=_zero())
                session.commit()
        return follow(client, tenant)

    @staticmethod
    @contextmanager
    def node_queries(database):
        seen: list[str] = []

        def note(conn, cursor, statement, parameters, context, executemany):
            if "log_nodes" in statement and statement.lstrip().upper().startswith("SELECT"):
                seen.append(statement)

        sa_event.listen(database.engine, "before_cursor_execute", note)
        try:
            yield seen
        finally:
            sa_event.remove(database.engine, "before_cursor_execute", note)

    def test_each_proof_endpoint_reads_its_nodes_in_one_query(
        self, client, tenant, database, sequenced
    ):
        assert len(sequenced) == 100
        paths = [f"/v1/log/proof/inclusion?seq={seq}&tree_size=100" for seq in (1, 37, 61, 100)]
        paths += ["/v1/log/proof/consistency?first=60&second=100"]
        for path in paths:
            with self.node_queries(database) as seen:
                response = client.get(path, headers=auth(tenant))
            assert response.status_code == 200, response.get_json()
            assert response.get_json()["hashes"], path
            assert len(seen) == 1, (path, seen)

    def test_the_console_event_page_reads_its_proof_in_one_query(
        self, client, tenant, database, sequenced
    ):
        path = urlsplit(
            client.post("/v1/console-sessions", json={}, headers=auth(tenant)).get_json()["url"]
        ).path
        assert client.get(path).status_code == 303
        with self.node_queries(database) as seen:
            page = client.get(f"/console/events/{sequenced[36]['id']}")
        assert page.status_code == 200
        assert b"Verified in checkpoint" in page.data
        assert len(seen) == 1, seen

    def test_a_sequencer_pass_and_a_signing_read_nodes_once_each(
        self, client, tenant, database, settings, sequenced
    ):
        record_now(client, tenant, database, {"notifications": [notification() for _ in range(9)]})
        with self.node_queries(database) as seen:
            with database.unit_of_work(write=True) as session:
                outcome = sequencer.sequence_events(session, datetime.now(UTC))
                session.commit()
        assert outcome.grown == {tenant.org_id: 109}
        assert len(seen) == 1, seen
        with self.node_queries(database) as seen:
            with database.unit_of_work(write=True) as session:
                tlog.sign_checkpoint(session, settings, tenant.org_id, 109, datetime.now(UTC))
                session.commit()
        assert len(seen) == 1, seen
        delivered = follow(client, tenant)
        hashes = [merkle.leaf_hash(event_leaf(e)) for e in delivered]
        with database.unit_of_work() as session:
            tree = tlog.tree_of(session, tenant.org_id)
        assert bytes(tree.root_hash) == merkle.root(109, lambda lv, ix: _naive(hashes, lv, ix))
