"""Fuzz what a tenant controls in an adapter (adapter_config.json, the safetensors header): every outcome is a
valid adapter or the typed 422, never another exception (which the HTTP layer would turn into a 500)."""

from __future__ import annotations

import json
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.adapters.validation import AdapterSpec, Architecture, InvalidAdapter, check_weights, read_config
from gateway.errors import Unprocessable
from tests.support.adapters import CONFIG, WEIGHTS, lora_config, lora_tensors, raw_safetensors, safetensors

ARCH = Architecture.from_config(
    {"hidden_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 256,
     "num_hidden_layers": 2, "model_type": "qwen2"}
)  # fmt: skip
MODULES = sorted(ARCH.modules)
SPEC = AdapterSpec(rank=8, alpha=16.0, target_modules=MODULES, base_model="tiny-base")

json_leaf = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.sampled_from(["LORA", "q_proj", "F32", "BF16", "tiny-base", "", "lora"])
)  # fmt: skip
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
near_int = st.integers(-3, 300) | st.sampled_from([2**63, 10**400, True, 8.0]) | json_value


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def outcome(call: Any, *args: Any) -> str:
    try:
        call(*args)
    except InvalidAdapter as exc:
        assert isinstance(exc, Unprocessable) and exc.status_code == 422 and exc.message
        assert len(exc.message) < 1000, exc.message  # a fuzzed value is quoted, not pasted whole
        return "invalid"
    return "valid"


GOOD_CONFIG = json.loads(lora_config())
# A good config with one to three fields replaced or dropped, so that most cases reach the deeper checks.
changes = st.fixed_dictionaries(
    {},
    optional={
        "peft_type": st.just("LORA") | json_value,
        "r": near_int,
        "lora_alpha": near_int | st.floats(allow_nan=True, allow_infinity=True),
        "target_modules": st.lists(st.sampled_from(MODULES) | json_value, min_size=1, max_size=4) | json_value,
        "base_model_name_or_path": json_value,
        "use_dora": json_value,
        "modules_to_save": json_value,
    },
)
configs = json_value | st.builds(
    lambda change, drop: {k: v for k, v in {**GOOD_CONFIG, **change}.items() if k not in drop},
    changes,
    st.sets(st.sampled_from(sorted(GOOD_CONFIG)), max_size=1),
)


@settings(max_examples=1000, deadline=None)
@given(config=configs, arch=st.sampled_from([ARCH, None]), raw=st.none() | st.binary(max_size=64))
def test_adapter_config_is_valid_or_422(
    folder: Path, config: Any, arch: Architecture | None, raw: bytes | None
) -> None:
    (folder / CONFIG).write_bytes(raw if raw is not None else json.dumps(config).encode())
    outcome(read_config, folder, "tiny-base", 8, arch)


tensor_names = st.sampled_from(list(lora_tensors(8))) | st.from_regex(
    r"base_model\.model\.model\.layers\.[0-9]{1,8}\.(self_attn|mlp)\.[a-z_]{1,9}\.lora_[AB]\.weight", fullmatch=True
) | st.text(max_size=30)  # fmt: skip
GOOD_INFO = {"dtype": "F32", "shape": [8, 128], "data_offsets": [0, 8]}
tensor_info = json_value | st.builds(
    lambda change: {**GOOD_INFO, **change},
    st.fixed_dictionaries(
        {},
        optional={
            "dtype": st.sampled_from(["F32", "F16", "BF16", "I64"]) | json_value,
            "shape": st.lists(near_int, max_size=3) | json_value,
            "data_offsets": st.lists(near_int, max_size=3) | json_value,
        },
    ),
)


@settings(max_examples=1000, deadline=None)
@given(
    header=st.dictionaries(tensor_names, tensor_info, max_size=4) | json_value,
    data=st.integers(0, 4096),
    length_delta=st.sampled_from([0, 0, 0, -1, 1, 2**40]),
    arch=st.sampled_from([ARCH, None]),
)
def test_safetensors_header_is_valid_or_422(
    folder: Path, header: Any, data: int, length_delta: int, arch: Architecture | None
) -> None:
    raw = json.dumps(header).encode()
    (folder / WEIGHTS).write_bytes(struct.pack("<Q", max(len(raw) + length_delta, 0)) + raw + b"\0" * data)
    outcome(check_weights, folder, SPEC, arch)


@pytest.mark.parametrize(
    ("config", "header", "word"),
    [
        ({"lora_alpha": "sixteen"}, None, "lora_alpha"),
        ({"lora_alpha": 10**400}, None, "lora_alpha"),
        ({"target_modules": [["q_proj"]]}, None, "target_modules"),
        ({"target_modules": [{"q": 1}]}, None, "target_modules"),
        (None, {"t": {"data_offsets": [0]}}, "data_offsets"),
        (None, {"t": {"data_offsets": ["0", "1"]}}, "data_offsets"),
        (None, {"t": {"data_offsets": {"a": 1}}}, "data_offsets"),
        (None, [[[[[[]]]]]], "header"),
    ],
)
def test_the_reported_500s_are_422(folder: Path, config: Any, header: Any, word: str) -> None:
    """The cases the security review found answering 500."""
    (folder / CONFIG).write_bytes(lora_config(**(config or {})))
    (folder / WEIGHTS).write_bytes(safetensors(lora_tensors(8)) if header is None else raw_safetensors(header))
    with pytest.raises(InvalidAdapter, match=word):
        check_weights(folder, read_config(folder, "tiny-base", 8, ARCH), ARCH)


def test_a_deeply_nested_header_is_422(folder: Path) -> None:
    raw = b"[" * 100_000 + b"]" * 100_000
    (folder / WEIGHTS).write_bytes(struct.pack("<Q", len(raw)) + raw)
    with pytest.raises(InvalidAdapter, match="unreadable header"):
        check_weights(folder, SPEC, ARCH)
