"""The README and ``docs/`` name only endpoints and commands that exist.

Every ``GET /v1/...``-like mention (any method, any path) is matched against the app's URL
map, and every ``auditlog ...`` command in code (inline or fenced) against the CLI's parser,
its options included. A failure lists each mention that does not exist, with its file.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import MapAdapter, RequestRedirect

from api.app import create_app
from api.cli import build_parser
from tests.factories import make_settings

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

ENDPOINT = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) (/[^\s`'\"|)\]]*)")
PLACEHOLDER = re.compile(r"<[^>/]*>|\{[^}/]*\}")
CODE = re.compile(r"```[^\n]*\n(.*?)```|`([^`\n]+)`", re.DOTALL)
COMMAND = re.compile(r"(?:^|[\s(;|&$])auditlog((?: +[^\s#|`\\]+)*)", re.MULTILINE)
#: Values that stand in a path for an id, as a request would send them.
SAMPLE_ID = "x-1"


def endpoint_mentions(text: str) -> Iterator[tuple[str, str]]:
    for method, path in ENDPOINT.findall(text):
        path = path.split("?", 1)[0].rstrip(".,:;")
        yield method, path


def command_mentions(text: str) -> Iterator[list[str]]:
    for block, inline in CODE.findall(text):
        for match in COMMAND.finditer(block or inline):
            yield match.group(1).split()


def route_exists(adapter: MapAdapter, method: str, path: str) -> bool:
    concrete = PLACEHOLDER.sub(SAMPLE_ID, path).replace("…", SAMPLE_ID)
    try:
        adapter.match(concrete, method=method)
    except RequestRedirect:
        return True
    except (NotFound, MethodNotAllowed):
        return False
    return True


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_problem(parser: argparse.ArgumentParser, words: list[str]) -> str | None:
    """Why ``auditlog <words>`` is not a command of ``parser`` (None: it is)."""
    named = ["auditlog"]
    for word in words:
        choices = subcommands(parser)
        if not choices:
            break
        if word not in choices:
            return f"no command {' '.join([*named, word])!r}"
        named.append(word)
        parser = choices[word]
    else:
        if subcommands(parser):
            return None  # a group named alone ("the auditlog log commands")
    options = {option for action in parser._actions for option in action.option_strings}
    for word in words[len(named) - 1 :]:
        option = re.match(r"\[?(--[a-z][a-z-]*)", word)
        if option and option.group(1) not in options:
            return f"{' '.join(named)!r} has no option {option.group(1)}"
    return None


@pytest.fixture(scope="module")
def mentions() -> dict[str, tuple[list[tuple[str, str]], list[list[str]]]]:
    found = {}
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        found[str(document.relative_to(ROOT))] = (
            list(endpoint_mentions(text)),
            list(command_mentions(text)),
        )
    return found


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MapAdapter]:
    """The URL map of the app as ``create_app`` builds it (no database is touched)."""
    var_dir = tmp_path_factory.mktemp("docs-var")
    app = create_app(make_settings(var_dir, database_url=f"sqlite:///{var_dir}/unused.sqlite3"))
    yield app.url_map.bind("localhost")
    app.extensions["auditlog"].database.engine.dispose()


class TestDocumentedEndpoints:
    def test_every_documented_endpoint_is_a_route_of_the_app(self, adapter, mentions):
        missing = sorted(
            {
                f"{name}: {method} {path}"
                for name, (endpoints, _) in mentions.items()
                for method, path in endpoints
                if not route_exists(adapter, method, path)
            }
        )
        assert not missing, "documented endpoints that do not exist:\n  " + "\n  ".join(missing)

    def test_the_docs_name_the_endpoints_of_every_part(self, mentions):
        named = {path for endpoints, _ in mentions.values() for _, path in endpoints}
        for path in ("/v1/events", "/v1/exports", "/v1/feed", "/v1/console-sessions", "/readyz"):
            assert path in named

    def test_a_route_that_does_not_exist_is_caught(self, adapter):
        assert route_exists(adapter, "GET", "/v1/entities/<type>/<id>/history")
        assert route_exists(adapter, "GET", "/v1/sources/{source_id}/notifications/…")
        assert not route_exists(adapter, "GET", "/v1/no-such-thing")
        assert not route_exists(adapter, "DELETE", "/v1/events")


class TestDocumentedCommands:
    def test_every_documented_command_exists_in_the_cli(self, mentions):
        parser = build_parser()
        missing = sorted(
            {
                f"{name}: auditlog {' '.join(words)} ({problem})"
                for name, (_, commands) in mentions.items()
                for words in commands
                if (problem := command_problem(parser, words))
            }
        )
        assert not missing, "documented commands that do not exist:\n  " + "\n  ".join(missing)

    def test_the_docs_name_commands_of_every_group(self, mentions):
        named = {words[0] for _, commands in mentions.values() for words in commands if words}
        assert set(subcommands(build_parser())) <= named

    def test_a_command_or_option_that_does_not_exist_is_caught(self):
        parser = build_parser()
        assert command_problem(parser, ["keys", "create", "ORG_ID", "[--name", "N]"]) is None
        assert command_problem(parser, ["console-link", "org_…", "--entity", "person/p-1"]) is None
        assert command_problem(parser, ["keys", "rename", "KEY_ID"]) is not None
        assert command_problem(parser, ["sources", "create", "--colour", "red"]) is not None
