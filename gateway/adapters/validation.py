"""Check a staged adapter against the base model before the engine ever sees it. Pure, no HTTP.

Reads only adapter_config.json and the safetensors *header*: weights are never loaded, never unpickled.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.adapters.archive import CONFIG, WEIGHTS
from gateway.errors import Unprocessable

_DTYPES = {"F16", "BF16", "F32"}
_TENSOR = re.compile(
    r"^base_model\.model\.model\.layers\.([0-9]{1,6})\.(self_attn|mlp)\.(\w+_proj)\.lora_([AB])(?:\.weight)?$"
)
_MAX_HEADER = 100 * 1024 * 1024
_JSON_ERRORS = (ValueError, UnicodeDecodeError, RecursionError)  # RecursionError: [[[[… nested too deep


def _short(value: Any) -> str:
    """A client-supplied value quoted in a message, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: Any) -> float | None:
    """A JSON number as a finite float, else None (also for true/false and integers past float's range)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


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
    except _JSON_ERRORS as exc:
        raise InvalidAdapter(f"{CONFIG} is not valid JSON: {exc}", param="file") from exc
    if not isinstance(config, dict):
        raise InvalidAdapter(f"{CONFIG} must be a JSON object.", param="file")
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise InvalidAdapter(
            f"Only PEFT LoRA adapters are supported; {CONFIG} says peft_type={_short(config.get('peft_type'))}."
        )
    if config.get("use_dora"):
        raise InvalidAdapter("DoRA adapters are not supported by the engine; train with use_dora=False.")
    if config.get("modules_to_save"):
        raise InvalidAdapter("Adapters with modules_to_save (fully trained extra layers) are not supported.")
    rank = config.get("r")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise InvalidAdapter(f"{CONFIG} must give the LoRA rank 'r' as a positive integer.")
    if rank > max_rank:
        raise InvalidAdapter(
            f"LoRA rank {rank} is above this engine's maximum of {max_rank}; retrain with r ≤ {max_rank}."
        )
    base = str(config.get("base_model_name_or_path") or "")
    if base and base != served_base and Path(base).name != served_base:
        raise InvalidAdapter(
            f"The adapter was trained on {_short(base)}, but this gateway serves {served_base!r}.", param="base_model"
        )
    targets = config.get("target_modules")
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise InvalidAdapter(f"{CONFIG} must list target_modules explicitly (e.g. ['q_proj', 'v_proj']).")
    if arch is not None:
        unknown = sorted(set(targets) - set(arch.modules))
        if unknown:
            raise InvalidAdapter(
                f"target_modules {_short(unknown)} do not exist in the base model; it has {sorted(arch.modules)}."
            )
    alpha = _finite(config.get("lora_alpha", rank))
    if alpha is None:
        raise InvalidAdapter(f"{CONFIG} must give lora_alpha as a number, not {_short(config.get('lora_alpha'))}.")
    return AdapterSpec(rank=rank, alpha=alpha, target_modules=list(targets), base_model=served_base)


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
        except _JSON_ERRORS as exc:
            raise InvalidAdapter(f"{WEIGHTS} has an unreadable header.", param="file") from exc
    if not isinstance(header, dict):
        raise InvalidAdapter(f"{WEIGHTS} has an unreadable header.", param="file")
    header.pop("__metadata__", None)
    data_len = size - 8 - header_len
    for name, info in header.items():
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
            raise InvalidAdapter(
                f"{WEIGHTS}: tensor {_short(name)} needs data_offsets as two integers [start, end].", param="file"
            )
        start, end = offsets
        if not (0 <= start <= end <= data_len):
            raise InvalidAdapter(f"{WEIGHTS}: tensor {_short(name)} points outside the file.", param="file")
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
                f"Unexpected tensor {_short(name)}: only LoRA A/B weights of the base model's layers are allowed."
            )
        layer, module, which = int(m.group(1)), m.group(3), m.group(4)
        if module not in spec.target_modules:
            raise InvalidAdapter(f"Tensor {name!r} is for {module}, which target_modules does not list.")
        dtype = info.get("dtype")
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise InvalidAdapter(f"Tensor {name!r} has dtype {_short(dtype)}; use float16, bfloat16 or float32.")
        shape = info.get("shape")
        if not (isinstance(shape, list) and len(shape) == 2 and all(_is_int(d) for d in shape)):
            raise InvalidAdapter(f"Tensor {name!r} must be two-dimensional, not {_short(shape)}.")
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
