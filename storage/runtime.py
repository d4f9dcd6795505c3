"""What a process holds for its lifetime: settings, the database and a way to publish work."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from storage.db import Database
from storage.settings import Settings

#: Publishes "process these notification keys" as one queue message; may raise.
Publish = Callable[[Sequence[int]], None]

#: Queues the building of one export; may raise.
StartExport = Callable[[str], None]


@dataclass
class Services:
    settings: Settings
    database: Database
    publish: Publish
    start_export: StartExport
