"""Recording notifications: load the state they touch, diff, write events and state."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from storage.inbox import PROCESSED
from storage.models import Notification


def record_notifications(
    session: Session, notifications: Sequence[Notification], now: datetime
) -> None:
    session.execute(
        update(Notification)
        .where(Notification.pk.in_([n.pk for n in notifications]))
        .values(status=PROCESSED, processed_at=now, error=None)
    )
