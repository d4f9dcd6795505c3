"""Generated data for benchmarks and for the tests that need volume."""

from __future__ import annotations

from typing import Any

FILL_EVENTS = """
INSERT INTO events (id, org_id, type, occurred_at, recorded_at, entity_type, entity_id,
                    entity_name, targets, actor_type, actor_id, ip_address, origin, position,
                    details)
SELECT g,
       {org_expression},
       (ARRAY['person.created', 'person.property_updated', 'app.created',
              'app.person_relationship_created', 'team.created', 'device.status_updated',
              'app.license_assigned', 'person.app_relationship_removed'])[1 + mod(g, 8)],
       timestamptz '2026-01-01 00:00:00+00' + g * interval '30 seconds',
       now(),
       (ARRAY['person', 'app', 'team', 'device'])[1 + mod(g, 4)],
       'e' || mod(g, 20000),
       'Name ' || mod(g, 20000), '[]', 'user', 'actor' || mod(g, 500),
       CASE WHEN mod(g, 3) = 0 THEN ('2001:db8:' || to_hex(mod(g, 65536)) || '::1')::inet
            ELSE ('10.' || mod(g, 256) || '.' || mod(g / 256, 256) || '.7')::inet END,
       'sync', 0, '{{}}'
FROM generate_series({first}, {last}) AS g;
INSERT INTO event_subjects (org_id, entity_type, entity_id, occurred_at, event_id)
SELECT org_id, entity_type, entity_id, occurred_at, id FROM events
WHERE id BETWEEN {first} AND {last};
ANALYZE events;
ANALYZE event_subjects;
"""


def fill_events(connection: Any, rows: int, orgs: int = 10, org_id: str | None = None) -> None:
    """Generate ``rows`` events on PostgreSQL with SQL alone (fast enough for millions).

    Organisations are ``org_0`` … unless ``org_id`` names the one to fill. Keys continue
    from the events already there; the sequence moves past them.
    """
    first = int(connection.exec_driver_sql("SELECT coalesce(max(id), 0) FROM events").scalar()) + 1
    org_expression = f"'{org_id}'" if org_id else f"'org_' || mod(g, {orgs})"
    connection.exec_driver_sql(
        FILL_EVENTS.format(org_expression=org_expression, first=first, last=first + rows - 1)
    )
    connection.exec_driver_sql(f"SELECT setval('events_id_seq', {first + rows - 1})")
