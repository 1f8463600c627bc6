"""What each operator role may do. viewer reads; billing also credits and closes periods; owner does everything."""

from __future__ import annotations

from enum import StrEnum

from gateway.people.models import OperatorRole


class Permission(StrEnum):
    READ = "read"
    BILLING = "billing"  # add credit, close a period
    MANAGE = "manage"  # tenants, keys, limits, prices, adapters, applications
    OPERATORS = "operators"  # create operators, reset their passwords, disable them


_GRANTS: dict[str, frozenset[Permission]] = {
    OperatorRole.OWNER: frozenset(Permission),
    OperatorRole.BILLING: frozenset({Permission.READ, Permission.BILLING}),
    OperatorRole.VIEWER: frozenset({Permission.READ}),
}


def allows(role: str, permission: Permission) -> bool:
    return permission in _GRANTS.get(role, frozenset())
