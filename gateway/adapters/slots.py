"""How many adapter uploads one gateway process takes at once, per tenant and in all."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from gateway.errors import RateLimited


class UploadSlots:
    """Each upload holds a slot from before its body is read until it is deployed or refused. Counted in this
    process (the event loop is its only user, so no lock): with several workers the bounds apply per worker."""

    def __init__(self, per_tenant: int, total: int) -> None:
        self.per_tenant, self.total = per_tenant, total
        self.held: Counter[str] = Counter()

    @contextmanager
    def hold(self, tenant_id: str) -> Iterator[None]:
        if self.held[tenant_id] >= self.per_tenant:
            raise RateLimited(
                f"You already have {self.per_tenant} adapter uploads in progress, the most allowed at once "
                "(ADAPTER_MAX_CONCURRENT_UPLOADS_PER_TENANT); retry when one has finished.",
                code="too_many_concurrent_uploads",
                headers={"Retry-After": "5"},
            )
        if self.held.total() >= self.total:
            raise RateLimited(
                f"This server is already receiving {self.total} adapter uploads, the most it takes at once "
                "(ADAPTER_MAX_CONCURRENT_UPLOADS); retry shortly.",
                code="too_many_concurrent_uploads",
                headers={"Retry-After": "5"},
            )
        self.held[tenant_id] += 1
        try:
            yield
        finally:
            self.held[tenant_id] -= 1
            if not self.held[tenant_id]:
                del self.held[tenant_id]
