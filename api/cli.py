"""The ``auditlog`` command: one JSON object on stdout, errors on stderr."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from storage import access, accounts, inbox
from storage.credentials import SecretBox
from storage.db import Database
from storage.migrate import upgrade
from storage.models import Organization
from storage.settings import Settings, settings_or_exit
from storage.timefmt import rfc3339

PUBLISH_CHUNK = 1000


def db_upgrade(settings: Settings, database: Database, args: argparse.Namespace) -> dict[str, Any]:
    from storage.migrate import current_revision

    upgrade(database)
    return {"revision": current_revision(database)}


def orgs_create(settings: Settings, database: Database, args: argparse.Namespace) -> dict[str, Any]:
    with database.unit_of_work(write=True) as session:
        org_id, key = accounts.create_organization(session, args.name)
        session.commit()
    return {"org_id": org_id, "api_key": key.api_key}


def orgs_list(settings: Settings, database: Database, args: argparse.Namespace) -> dict[str, Any]:
    with database.unit_of_work() as session:
        return {"orgs": accounts.list_organizations(session)}


def keys_create(settings: Settings, database: Database, args: argparse.Namespace) -> dict[str, Any]:
    scopes = args.scope or accounts.DEFAULT_SCOPES
    with database.unit_of_work(write=True) as session:
        key = accounts.create_api_key(session, args.org_id, name=args.name, scopes=scopes)
        session.commit()
    return {"key_id": key.key_id, "api_key": key.api_key}


def keys_list(settings: Settings, database: Database, args: argparse.Namespace) -> dict[str, Any]:
    with database.unit_of_work() as session:
        return {"keys": accounts.list_api_keys(session, args.org_id)}


def keys_revoke(settings: Settings, database: Database, args: argparse.Namespace) -> dict[str, Any]:
    with database.unit_of_work(write=True) as session:
        accounts.revoke_api_key(session, args.key_id)
        session.commit()
    return {"key_id": args.key_id, "revoked": True}


def sources_create(
    settings: Settings, database: Database, args: argparse.Namespace
) -> dict[str, Any]:
    with database.unit_of_work(write=True) as session:
        source = accounts.create_source(
            session, SecretBox(settings.secret_keys), args.org_id, args.name
        )
        session.commit()
    return {"source_id": source.source_id, "secret": source.secret}


def sources_list(
    settings: Settings, database: Database, args: argparse.Namespace
) -> dict[str, Any]:
    with database.unit_of_work() as session:
        return {"sources": accounts.list_sources(session, args.org_id, datetime.now(UTC))}


def sources_rotate_secret(
    settings: Settings, database: Database, args: argparse.Namespace
) -> dict[str, Any]:
    with database.unit_of_work(write=True) as session:
        source = accounts.rotate_source_secret(
            session,
            SecretBox(settings.secret_keys),
            args.source_id,
            timedelta(seconds=args.keep_old_for),
            datetime.now(UTC),
        )
        session.commit()
    return {"source_id": source.source_id, "secret": source.secret}


def sources_disable(
    settings: Settings, database: Database, args: argparse.Namespace
) -> dict[str, Any]:
    with database.unit_of_work(write=True) as session:
        disabled_at = accounts.disable_source(session, args.source_id, datetime.now(UTC))
        session.commit()
    return {"source_id": args.source_id, "disabled": True, "disabled_at": rfc3339(disabled_at)}


def secrets_reseal(
    settings: Settings, database: Database, args: argparse.Namespace
) -> dict[str, Any]:
    with database.unit_of_work(write=True) as session:
        counts = accounts.reseal_secrets(session, SecretBox(settings.secret_keys))
        session.commit()
    return counts


def access_log(settings: Settings, database: Database, args: argparse.Namespace) -> dict[str, Any]:
    with database.unit_of_work() as session:
        if session.get(Organization, args.org_id) is None:
            raise accounts.NotFound(f"organisation {args.org_id} does not exist")
        entries = access.page(session, args.org_id, args.limit, actions=tuple(args.action or ()))
        return {"entries": [access.document(entry) for entry in entries]}


def notifications_retry(
    settings: Settings, database: Database, args: argparse.Namespace
) -> dict[str, Any]:
    from worker.queue import create_celery, publisher

    with database.unit_of_work(write=True) as session:
        pks = inbox.requeue_failed(session, datetime.now(UTC), org_id=args.org)
        session.commit()
    publish = publisher(create_celery(settings, fail_fast=True))
    try:
        for start in range(0, len(pks), PUBLISH_CHUNK):
            publish(pks[start : start + PUBLISH_CHUNK])
    except Exception as exc:
        print(
            f"auditlog: the broker is unreachable ({exc}); the sweeper will publish them",
            file=sys.stderr,
        )
    return {"requeued": len(pks)}


def console_link(
    settings: Settings, database: Database, args: argparse.Namespace
) -> dict[str, Any]:
    from marshmallow import ValidationError

    from api.console.links import console_session_request_schema, mint_link

    body: dict[str, Any] = {"permissions": args.permission or []}
    if args.entity:
        entity_type, _, entity_id = args.entity.partition("/")
        body["scope"] = {"entity": {"type": entity_type, "id": entity_id}}
    elif args.actor:
        body["scope"] = {"actor_id": args.actor}
    viewer = {"id": args.viewer_id, "name": args.viewer_name, "email": args.viewer_email}
    if any(value is not None for value in viewer.values()):
        body["viewer"] = viewer
    try:
        request = console_session_request_schema.load(body)
    except ValidationError as exc:
        raise ValueError(json.dumps(exc.messages)) from None
    with database.unit_of_work() as session:
        if session.get(Organization, args.org_id) is None:
            raise accounts.NotFound(f"organisation {args.org_id} does not exist")
    base_url = settings.public_url or f"http://localhost:{settings.port}"
    return mint_link(database, settings, args.org_id, request, base_url)


def log_check(settings: Settings, database: Database, args: argparse.Namespace) -> dict[str, Any]:
    from worker.logcheck import check_log

    return check_log(database, org_id=args.org)


def log_rotate_key(
    settings: Settings, database: Database, args: argparse.Namespace
) -> dict[str, Any]:
    from storage import tlog

    if settings.log_signing_key:
        raise ValueError(
            "LOG_SIGNING_KEY is set: checkpoints are signed with it; change it instead"
        )
    with database.unit_of_work(write=True) as session:
        signer = tlog.rotate_key(session, settings, datetime.now(UTC))
        session.commit()
    return {"key_id": signer.key_id.hex(), "vkey": signer.vkey}


def verify(args: argparse.Namespace) -> dict[str, Any]:
    """Offline: no settings, no database, no network (``main`` builds none for it)."""
    from worker.logcheck import verify_export

    return verify_export(
        Path(args.export_file),
        Path(args.evidence),
        args.key,
        origin=args.origin,
        require_complete=args.complete,
    )


def non_negative_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {raw!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("cannot be negative")
    return value


def positive_int(raw: str) -> int:
    value = non_negative_int(raw)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auditlog", description="Audit-log service administration."
    )
    groups = parser.add_subparsers(dest="group", required=True)

    db = groups.add_parser("db", help="database schema").add_subparsers(
        dest="command", required=True
    )
    db.add_parser("upgrade", help="apply migrations (safe to run again)").set_defaults(
        run=db_upgrade
    )

    orgs = groups.add_parser("orgs", help="organisations").add_subparsers(
        dest="command", required=True
    )
    create_org = orgs.add_parser("create", help="create an organisation and its first API key")
    create_org.add_argument("name")
    create_org.set_defaults(run=orgs_create)
    orgs.add_parser("list", help="every organisation").set_defaults(run=orgs_list)

    keys = groups.add_parser("keys", help="API keys").add_subparsers(dest="command", required=True)
    create_key = keys.add_parser("create", help="issue an API key")
    create_key.add_argument("org_id")
    create_key.add_argument("--name")
    create_key.add_argument(
        "--scope",
        action="append",
        choices=accounts.SCOPES,
        help="repeatable; without it the key has read and export",
    )
    create_key.set_defaults(run=keys_create)
    list_keys = keys.add_parser("list", help="an organisation's keys, scopes and last use")
    list_keys.add_argument("org_id")
    list_keys.set_defaults(run=keys_list)
    revoke_key = keys.add_parser("revoke", help="revoke an API key")
    revoke_key.add_argument("key_id")
    revoke_key.set_defaults(run=keys_revoke)

    sources = groups.add_parser("sources", help="webhook sources").add_subparsers(
        dest="command", required=True
    )
    create_src = sources.add_parser("create", help="register a webhook source and its secret")
    create_src.add_argument("org_id")
    create_src.add_argument("name")
    create_src.set_defaults(run=sources_create)
    list_src = sources.add_parser("list", help="an organisation's webhook sources")
    list_src.add_argument("org_id")
    list_src.set_defaults(run=sources_list)
    rotate = sources.add_parser(
        "rotate-secret", help="a new secret; the old one keeps verifying during the overlap"
    )
    rotate.add_argument("source_id")
    rotate.add_argument(
        "--keep-old-for",
        type=non_negative_int,
        default=86400,
        metavar="SECONDS",
        help="how long the old secret still verifies (default 86400)",
    )
    rotate.set_defaults(run=sources_rotate_secret)
    disable = sources.add_parser("disable", help="refuse the source's webhooks (403)")
    disable.add_argument("source_id")
    disable.set_defaults(run=sources_disable)

    secrets_group = groups.add_parser(
        "secrets", help="secrets stored encrypted with SECRET_KEY"
    ).add_subparsers(dest="command", required=True)
    secrets_group.add_parser(
        "reseal",
        help="re-encrypt stored secrets with SECRET_KEY, so SECRET_KEY_FALLBACKS can be emptied",
    ).set_defaults(run=secrets_reseal)

    accesses = groups.add_parser(
        "access-log", help="who did what to an organisation's log, newest first"
    )
    accesses.add_argument("org_id")
    accesses.add_argument("--limit", type=positive_int, default=100, metavar="N")
    accesses.add_argument(
        "--action", action="append", choices=access.ACTIONS, metavar="ACTION", help="repeatable"
    )
    accesses.set_defaults(run=access_log)

    notifications = groups.add_parser(
        "notifications", help="the notification inbox"
    ).add_subparsers(dest="command", required=True)
    retry = notifications.add_parser("retry", help="re-queue failed notifications")
    retry.add_argument("--org", metavar="ORG_ID")
    retry.set_defaults(run=notifications_retry)

    link = groups.add_parser(
        "console-link", help="a single-use link (five minutes) into the console"
    )
    link.add_argument("org_id")
    scope = link.add_mutually_exclusive_group()
    scope.add_argument("--entity", metavar="TYPE/ID", help="only this record (person/p-1)")
    scope.add_argument("--actor", metavar="ACTOR_ID", help="only what this actor did")
    link.add_argument(
        "--permission", action="append", choices=["export", "restore"], help="repeatable"
    )
    link.add_argument("--viewer-id", metavar="ID")
    link.add_argument("--viewer-name", metavar="NAME")
    link.add_argument("--viewer-email", metavar="EMAIL")
    link.set_defaults(run=console_link)

    log = groups.add_parser("log", help="the verifiable log").add_subparsers(
        dest="command", required=True
    )
    check = log.add_parser(
        "check", help="recompute each organisation's tree from the stored events"
    )
    check.add_argument("--org", metavar="ORG_ID")
    check.set_defaults(run=log_check)
    log.add_parser(
        "rotate-key", help="sign checkpoints with a new key (old public keys stay listed)"
    ).set_defaults(run=log_rotate_key)

    check_file = groups.add_parser(
        "verify", help="prove an export file with its evidence and the log's public key"
    )
    check_file.add_argument("export_file", metavar="EXPORT_FILE")
    check_file.add_argument("--evidence", required=True, metavar="FILE")
    check_file.add_argument("--key", required=True, metavar="VKEY", help="the log's vkey")
    check_file.add_argument(
        "--origin",
        metavar="ORIGIN",
        help="the log the checkpoint must name (<LOG_ORIGIN>/<org_id>)",
    )
    check_file.add_argument(
        "--complete",
        action="store_true",
        help="refuse evidence of a filtered export: the file must be the whole log",
    )
    check_file.set_defaults(offline=verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from worker.logcheck import CheckFailed

    args = build_parser().parse_args(argv)
    database: Database | None = None
    try:
        if hasattr(args, "offline"):  # verify: no settings, no database, no network
            result = args.offline(args)
        else:
            settings = settings_or_exit()
            database = Database(settings.database_url)
            result = args.run(settings, database, args)
    except CheckFailed as failed:
        for line in failed.lines:
            print(line, file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"auditlog: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if database is not None:  # close its connections (main may run in-process)
            database.engine.dispose()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
