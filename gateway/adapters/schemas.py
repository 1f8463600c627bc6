"""Tenant-facing deployment objects."""

from __future__ import annotations

import msgspec

from gateway.adapters.models import Adapter


class DeploymentPublic(msgspec.Struct):
    id: str
    name: str
    base_model: str
    status: str
    status_reason: str | None
    rank: int
    size_bytes: int
    created_at: int
    endpoint: str
    object: str = "deployment"

    @classmethod
    def of(cls, a: Adapter) -> DeploymentPublic:
        return cls(
            id=a.id,
            name=a.name,
            base_model=a.base_model,
            status=a.status,
            status_reason=a.status_reason,
            rank=a.rank,
            size_bytes=a.size_bytes,
            created_at=int(a.created_at.timestamp()),
            endpoint=f"/maas/deployment/{a.id}/chat/completions",
        )


class DeploymentList(msgspec.Struct):
    data: list[DeploymentPublic]
    object: str = "list"
