from __future__ import annotations

import re

from gateway import ids
from gateway.auth.keys import bearer_token, display_prefix, generate_key, hash_key


def test_keys_are_long_random_and_hashed() -> None:
    keys = {generate_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith("sk-")
        assert len(key) - 3 >= 43  # 32 random bytes, base64url
        assert re.fullmatch(r"[0-9a-f]{64}", hash_key(key))
        assert key.startswith(display_prefix(key)) and len(display_prefix(key)) == 12
    assert hash_key("sk-a") != hash_key("sk-b")


def test_deployment_ids_look_like_mif_ids() -> None:
    d = ids.deployment_id()
    assert re.fullmatch(r"mif-[a-z2-7]{16}", d)
    assert len({ids.deployment_id() for _ in range(1000)}) == 1000


def test_request_ids_use_every_base32_character() -> None:
    rids = [ids.request_id() for _ in range(2000)]
    assert all(re.fullmatch(r"req_[a-z2-7]{24}", r) for r in rids) and len(set(rids)) == 2000
    assert set("".join(r[4:] for r in rids)) == set("abcdefghijklmnopqrstuvwxyz234567")


def test_bearer_scheme_is_case_insensitive() -> None:
    for header in ("Bearer sk-abc", "bearer sk-abc", "BEARER  sk-abc ", " Bearer sk-abc"):
        assert bearer_token(header) == "sk-abc", header
    for header in (None, "", "Bearer", "Bearer ", "Basic sk-abc", "Bearersk-abc", "sk-abc"):
        assert bearer_token(header) == "", header
