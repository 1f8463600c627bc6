"""Tenants cannot see or call each other's adapters; revoked keys stop working at once."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.support.sql import Sql

CHAT = [{"role": "user", "content": "hi"}]


def test_tenant_cannot_call_or_list_another_tenants_adapter(
    gateway: Any, make_tenant: Any, register_adapter: Any, sql: Sql
) -> None:
    a, b = make_tenant(), make_tenant()
    deployment = register_adapter(a.id, "secret-sauce", 2)
    client_b = OpenAI(base_url=f"{gateway.url}/v1", api_key=b.key, max_retries=0)
    before = sql.scalar("SELECT count(*) FROM usage_records WHERE tenant_id = $1", b.id)
    for model in ("secret-sauce", deployment["id"]):
        with pytest.raises(openai.NotFoundError) as err:
            client_b.chat.completions.create(model=model, messages=CHAT, max_tokens=4)
        assert err.value.body["code"] == "model_not_found"  # type: ignore[index]
    # the same answer as for a model that exists nowhere
    with pytest.raises(openai.NotFoundError) as nowhere:
        client_b.chat.completions.create(model="no-such-model", messages=CHAT, max_tokens=4)
    assert nowhere.value.body["message"].replace("no-such-model", "X") == err.value.body["message"].replace(  # type: ignore[index]
        deployment["id"], "X"
    )
    assert {m.id for m in client_b.models.list().data} == {"tiny-base"}
    assert sql.scalar("SELECT count(*) FROM usage_records WHERE tenant_id = $1", b.id) == before


def test_revoked_key_gets_401_at_once(gateway: Any, admin: httpx.Client, make_tenant: Any) -> None:
    t = make_tenant()
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=t.key, max_retries=0)
    assert client.chat.completions.create(model="tiny-base", messages=CHAT, max_tokens=2).choices
    assert admin.delete(f"/admin/keys/{t.key_id}").status_code == 204
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="tiny-base", messages=CHAT, max_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    assert admin.delete(f"/admin/keys/{t.key_id}").status_code == 404


def test_keys_are_stored_only_as_hash_and_prefix(make_tenant: Any, sql: Sql) -> None:
    t = make_tenant()
    row = sql.one("SELECT * FROM api_keys WHERE id = $1", t.key_id)
    assert t.key not in str(row.values())
    assert t.key.startswith(row["prefix"]) and len(row["prefix"]) < 16
    assert len(t.key) >= 3 + 22  # sk- plus at least 128 bits in base64
