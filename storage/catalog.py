"""The vocabulary every room shares: entity types, relationships and the event catalog.

The codes and labels are fixed: clients are written against them.
"""

from __future__ import annotations

from dataclasses import dataclass

ENTITY_TYPES = ("app", "person", "team", "device", "license", "subscription")
KINDS = ("snapshot", "patch", "delete", "event", "baseline")
ORIGINS = ("sync", "google", "csv", "manual", "api", "workflow", "discovery")
ACTOR_TYPES = ("user", "integration", "workflow", "system")
PARENTED_TYPES = ("license", "subscription")


@dataclass(frozen=True)
class Relationship:
    """A relationship name as seen from one entity type.

    ``kind`` names the shared edge; ``side`` says whether this type is the edge's ``a`` or
    ``b`` end; ``other`` is the entity type at the far end (None for ``org``).
    """

    name: str
    kind: str
    side: str
    other: str | None


RELATIONSHIPS: dict[str, dict[str, Relationship]] = {
    "person": {
        "apps": Relationship("apps", "app_person", "b", "app"),
        "devices": Relationship("devices", "device_person", "b", "device"),
    },
    "app": {
        "persons": Relationship("persons", "app_person", "a", "person"),
        "teams": Relationship("teams", "app_team", "a", "team"),
        "org": Relationship("org", "app_org", "a", None),
    },
    "team": {
        "persons": Relationship("persons", "team_person", "a", "person"),
        "apps": Relationship("apps", "app_team", "b", "app"),
    },
    "device": {"persons": Relationship("persons", "device_person", "a", "person")},
    "license": {"assignees": Relationship("assignees", "license_person", "a", "person")},
    "subscription": {},
}

#: The ends of each edge kind: (type of a, type of b). ``app_org``'s b is the fixed id "org".
EDGE_ENDS: dict[str, tuple[str, str | None]] = {
    "app_person": ("app", "person"),
    "app_team": ("app", "team"),
    "app_org": ("app", None),
    "team_person": ("team", "person"),
    "device_person": ("device", "person"),
    "license_person": ("license", "person"),
}
ORG_EDGE_ID = "org"

#: ``kind: event`` actions and the entity type each belongs to.
ACTIONS = {"app.file_uploaded": "app", "person.workflow_launched": "person"}


# Which code a change derives, by entity type (and origin variant).
CREATED_CODES: dict[str, dict[str, str]] = {
    "app": {},
    "person": {"google": "person.created_google", "csv": "person.created_csv"},
    "team": {"sync": "team.created_sync", "csv": "team.created_csv"},
    "device": {"csv": "device.created_csv"},
    "license": {"sync": "app.license_detected", "discovery": "app.license_detected"},
    "subscription": {
        "sync": "app.subscription_detected",
        "discovery": "app.subscription_detected",
    },
}
DEFAULT_CREATED = {
    "app": "app.created",
    "person": "person.created",
    "team": "team.created",
    "device": "device.created",
    "license": "app.license_created",
    "subscription": "app.subscription_created",
}
UPDATED_CODES = {
    "app": "app.property_updated",
    "person": "person.property_updated",
    "team": "team.property_updated",
    "device": "device.property_updated",
    "license": "app.license_updated",
    "subscription": "app.subscription_updated",
}
DELETED_CODES = {
    "app": "app.deleted",
    "person": "person.deleted",
    "team": "team.deleted",
    "device": "device.archived",
    "license": "app.license_deleted",
    "subscription": "app.subscription_archived",
}

#: (edge kind, the entity type whose point of view it is) → (created code, removed code).
EDGE_CODES: dict[tuple[str, str], tuple[str, str]] = {
    ("app_person", "app"): ("app.person_relationship_created", "app.person_relationship_removed"),
    ("app_person", "person"): (
        "person.app_relationship_created",
        "person.app_relationship_removed",
    ),
    ("app_team", "app"): ("app.team_relationship_created", "app.team_relationship_removed"),
    ("app_team", "team"): ("team.app_relationship_created", "team.app_relationship_removed"),
    ("app_org", "app"): ("app.org_relationship_created", "app.org_relationship_removed"),
    ("team_person", "team"): (
        "team.person_relationship_created",
        "team.person_relationship_removed",
    ),
    ("device_person", "device"): (
        "device.person_relationship_created",
        "device.person_relationship_removed",
    ),
    ("device_person", "person"): (
        "person.device_relationship_created",
        "person.device_relationship_removed",
    ),
    ("license_person", "license"): ("app.license_assigned", "app.license_revoked"),
}


@dataclass(frozen=True)
class EventType:
    code: str
    label: str
    entity_type: str
    extension: bool = False


EVENT_TYPES: tuple[EventType, ...] = (
    EventType("app.created", "App Created", "app"),
    EventType("app.property_updated", "App Property Updated", "app"),
    EventType("app.file_uploaded", "App File Upload", "app"),
    EventType("app.org_relationship_created", "App/Org Relationship Created", "app"),
    EventType("app.org_relationship_removed", "App/Org Relationship Removed", "app", True),
    EventType("app.person_relationship_created", "App/Person Relationship Created", "app"),
    EventType("app.person_relationship_removed", "App/Person Relationship Removed", "app"),
    EventType("app.team_relationship_created", "App/Team Relationship Created", "app"),
    EventType("app.team_relationship_removed", "App/Team Relationship Removed", "app"),
    EventType("app.license_created", "App License Created", "app"),
    EventType("app.license_detected", "App License Detected", "app"),
    EventType("app.license_updated", "App License Updated", "app"),
    EventType("app.license_deleted", "App License Deleted", "app"),
    EventType("app.license_assigned", "App License Assigned", "app"),
    EventType("app.license_revoked", "App License Revoked", "app"),
    EventType("app.subscription_created", "App Subscription Created", "app"),
    EventType("app.subscription_detected", "App Subscription Detected", "app"),
    EventType("app.subscription_updated", "App Subscription Updated", "app", True),
    EventType("app.subscription_archived", "App Subscription Archived", "app"),
    EventType("app.deleted", "App Deleted", "app", True),
    EventType("person.created", "Person Created", "person"),
    EventType("person.created_google", "Person Created Google", "person"),
    EventType("person.created_csv", "Person Created CSV", "person"),
    EventType("person.workflow_launched", "Person Workflow launched", "person"),
    EventType("person.property_updated", "Person Property Updated", "person"),
    EventType("person.app_relationship_created", "Person/App Relationship Created", "person"),
    EventType("person.app_relationship_removed", "Person/App Relationship Removed", "person"),
    EventType("person.device_relationship_created", "Person/Device Relationship Created", "person"),
    EventType("person.device_relationship_removed", "Person/Device Relationship Removed", "person"),
    EventType("person.deleted", "Person Deleted", "person", True),
    EventType("team.created", "Team Created", "team"),
    EventType("team.created_sync", "Team Created via Sync", "team"),
    EventType("team.created_csv", "Team Created CSV", "team"),
    EventType("team.property_updated", "Team Property Updated", "team"),
    EventType("team.app_relationship_created", "Team/App Relationship Created", "team"),
    EventType("team.app_relationship_removed", "Team/App Relationship Removed", "team"),
    EventType("team.person_relationship_created", "Team/Person Relationship Created", "team"),
    EventType(
        "team.person_relationship_created_csv", "Team/Person Relationship Created CSV", "team"
    ),
    EventType("team.person_relationship_removed", "Team/Person Relationship Removed", "team"),
    EventType("team.deleted", "Team Deleted", "team", True),
    EventType("device.created", "Device Created", "device"),
    EventType("device.created_csv", "Device Created CSV", "device"),
    EventType("device.property_updated", "Device Property Updated", "device"),
    EventType("device.status_updated", "Device Status Updated", "device"),
    EventType("device.archived", "Device Archived", "device"),
    EventType("device.person_relationship_created", "Device/Person Relationship Created", "device"),
    EventType("device.person_relationship_removed", "Device/Person Relationship Removed", "device"),
)

EVENT_TYPES_BY_CODE = {event_type.code: event_type for event_type in EVENT_TYPES}


def label_of(code: str) -> str:
    return EVENT_TYPES_BY_CODE[code].label


#: Codes whose record is the event's first target (a license or subscription), not its entity.
PARENTED_EVENT_PREFIXES = ("app.license_", "app.subscription_")
PROPERTY_EVENT_CODES = frozenset(UPDATED_CODES.values()) | {"device.status_updated"}

#: Relationship code → (edge kind, the entity type whose point of view it is, present after).
EDGE_EVENT_CODES: dict[str, tuple[str, str, bool]] = {
    code: (kind, perspective, present)
    for (kind, perspective), pair in EDGE_CODES.items()
    for code, present in zip(pair, (True, False), strict=True)
}
EDGE_EVENT_CODES["team.person_relationship_created_csv"] = ("team_person", "team", True)
