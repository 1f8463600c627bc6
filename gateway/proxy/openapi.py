"""The request contract (gateway.proxy.schemas) as the OpenAPI request body of a route.

The proxy routes read raw bytes (the hot path decodes and checks the body itself), so Litestar sees no `data`
parameter to document. msgspec writes the JSON Schema of the very Structs that check the body; it is turned
into Litestar's Schema objects once, at import, with its `$defs` written inline (Litestar replaces the
components of its config with its own, so a `$ref` to them would dangle).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

_FIELDS = {f.metadata.get("alias", f.name): f.name for f in dataclasses.fields(Schema)}
_ONE = ("items", "additionalProperties", "propertyNames")
_MANY = ("anyOf", "oneOf", "allOf")


def openapi_schema(struct: type[msgspec.Struct]) -> Schema:
    """`struct`'s JSON Schema (msgspec's own) as a Litestar Schema, every reference inlined."""
    tree = msgspec.json.schema(struct)
    return _convert(tree, tree.get("$defs", {}))


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> Schema:
    if "$ref" in node:
        return _convert(defs[node["$ref"].rpartition("/")[2]], defs)
    kw: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("$defs", "discriminator"):  # the discriminator's mapping names $defs, which are inlined
            continue
        if key == "type":
            value = OpenAPIType(value)
        elif key == "properties":
            value = {name: _convert(v, defs) for name, v in value.items()}
        elif key in _ONE and isinstance(value, dict):
            value = _convert(value, defs)
        elif key in _MANY:
            value = [_convert(v, defs) for v in value]
        kw[_FIELDS[key]] = value
    return Schema(**kw)


def documented_body(struct: type[msgspec.Struct]) -> type[Operation]:
    """An OpenAPI operation whose JSON request body is `struct`."""
    schema = openapi_schema(struct)

    @dataclass
    class WithBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = RequestBody(
                content={"application/json": OpenAPIMediaType(schema=schema)}, required=True
            )

    return WithBody
