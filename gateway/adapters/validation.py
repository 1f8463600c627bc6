"""Check a staged adapter against the base model before the engine ever sees it. Pure, no HTTP.

Reads only adapter_config.json and the safetensors *header*: weights are never loaded, never unpickled.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.adapters.archive import CONFIG, WEIGHTS
from gateway.errors import Unprocessable

_DTYPES = {"F16", "BF16", "F32"}
_TENSOR = re.compile(
    r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+_proj)\.lora_([AB])(?:\.weight)?$"
)
_MAX_HEADER = 100 * 1024 * 1024


class InvalidAdapter(Unprocessable):
    code = "invalid_adapter"


@dataclass(frozen=True)
class Architecture:
    """The shapes a LoRA must match: module name → (in_features, out_features), and the layer count."""

    model_type: str
    num_layers: int
    modules: dict[str, tuple[int, int]]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Architecture:
        hidden = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
        kv_heads = int(config.get("num_key_value_heads") or heads)
        head_dim = int(config.get("head_dim") or hidden // heads)
        inter = int(config["intermediate_size"])
        return cls(
            model_type=str(config.get("model_type", "")),
            num_layers=int(config["num_hidden_layers"]),
            modules={
                "q_proj": (hidden, heads * head_dim),
                "k_proj": (hidden, kv_heads * head_dim),
                "v_proj": (hidden, kv_heads * head_dim),
                "o_proj": (heads * head_dim, hidden),
                "gate_proj": (hidden, inter),
                "up_proj": (hidden, inter),
                "down_proj": (inter, hidden),
            },
        )

    @classmethod
    def from_model_dir(cls, path: Path) -> Architecture:
        return cls.from_config(json.loads((path / "config.json").read_text()))


@dataclass(frozen=True)
class AdapterSpec:
    rank: int
    alpha: float
    target_modules: list[str]
    base_model: str


def read_config(staging: Path, served_base: str, max_rank: int, arch: Architecture | None) -> AdapterSpec:
    try:
        config = json.loads((staging / CONFIG).read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidAdapter(f"{CONFIG} is not valid JSON: {exc}", param="file") from exc
    if not isinstance(config, dict):
        raise InvalidAdapter(f"{CONFIG} must be a JSON object.", param="file")
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise InvalidAdapter(
            f"Only PEFT LoRA adapters are supported; {CONFIG} says peft_type={config.get('peft_type')!r}."
        )
    if config.get("use_dora"):
        raise InvalidAdapter("DoRA adapters are not supported by the engine; train with use_dora=False.")
    if config.get("modules_to_save"):
        raise InvalidAdapter("Adapters with modules_to_save (fully trained extra layers) are not supported.")
    rank = config.get("r")
    if not isinstance(rank, int) or rank < 1:
        raise InvalidAdapter(f"{CONFIG} must give the LoRA rank 'r' as a positive integer.")
    if rank > max_rank:
        raise InvalidAdapter(
            f"LoRA rank {rank} is above this engine's maximum of {max_rank}; retrain with r ≤ {max_rank}."
        )
    base = str(config.get("base_model_name_or_path") or "")
    if base and base != served_base and Path(base).name != served_base:
        raise InvalidAdapter(
            f"The adapter was trained on {base!r}, but this gateway serves {served_base!r}.", param="base_model"
        )
    targets = config.get("target_modules")
    if isinstance(targets, str) or not isinstance(targets, list) or not targets:
        raise InvalidAdapter(f"{CONFIG} must list target_modules explicitly (e.g. ['q_proj', 'v_proj']).")
    if arch is not None:
        unknown = sorted(set(targets) - set(arch.modules))
        if unknown:
            raise InvalidAdapter(
                f"target_modules {unknown} do not exist in the base model; it has {sorted(arch.modules)}."
            )
    alpha = config.get("lora_alpha", rank)
    return AdapterSpec(rank=rank, alpha=float(alpha), target_modules=list(targets), base_model=served_base)


def read_safetensors_header(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    with path.open("rb") as f:
        raw_len = f.read(8)
        if len(raw_len) != 8:
            raise InvalidAdapter(f"{WEIGHTS} is not a safetensors file.", param="file")
        (header_len,) = struct.unpack("<Q", raw_len)
        if header_len > min(_MAX_HEADER, size - 8):
            raise InvalidAdapter(f"{WEIGHTS} is not a safetensors file (bad header length).", param="file")
        try:
            header = json.loads(f.read(header_len))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidAdapter(f"{WEIGHTS} has an unreadable header.", param="file") from exc
    if not isinstance(header, dict):
        raise InvalidAdapter(f"{WEIGHTS} has an unreadable header.", param="file")
    header.pop("__metadata__", None)
    data_len = size - 8 - header_len
    for name, info in header.items():
        start, end = info.get("data_offsets", (0, -1)) if isinstance(info, dict) else (0, -1)
        if not (0 <= start <= end <= data_len):
            raise InvalidAdapter(f"{WEIGHTS}: tensor {name!r} points outside the file.", param="file")
    return header


def check_weights(staging: Path, spec: AdapterSpec, arch: Architecture | None) -> None:
    """Every tensor is a LoRA A/B of a targeted module, with the rank and the base model's shapes."""
    header = read_safetensors_header(staging / WEIGHTS)
    if not header:
        raise InvalidAdapter(f"{WEIGHTS} holds no tensors.")
    for name, info in header.items():
        m = _TENSOR.match(name)
        if not m:
            raise InvalidAdapter(
                f"Unexpected tensor {name!r}: only LoRA A/B weights of the base model's layers are allowed."
            )
        layer, module, which = int(m.group(1)), m.group(3), m.group(4)
        if module not in spec.target_modules:
            raise InvalidAdapter(f"Tensor {name!r} is for {module}, which target_modules does not list.")
        if info.get("dtype") not in _DTYPES:
            raise InvalidAdapter(f"Tensor {name!r} has dtype {info.get('dtype')}; use float16, bfloat16 or float32.")
        shape = info.get("shape")
        if not (isinstance(shape, list) and len(shape) == 2):
            raise InvalidAdapter(f"Tensor {name!r} must be two-dimensional, not {shape}.")
        if arch is None:
            expected_rank_dim = shape[0] if which == "A" else shape[1]
            if expected_rank_dim != spec.rank:
                raise InvalidAdapter(f"Tensor {name!r} has shape {shape}, which does not match rank {spec.rank}.")
            continue
        if layer >= arch.num_layers:
            raise InvalidAdapter(f"Tensor {name!r} is for layer {layer}; the base model has {arch.num_layers} layers.")
        fan_in, fan_out = arch.modules[module]
        expected = [spec.rank, fan_in] if which == "A" else [fan_out, spec.rank]
        if shape != expected:
            raise InvalidAdapter(
                f"Tensor {name!r} has shape {shape}; the base model needs {expected} for rank {spec.rank}."
            )
