"""Build adapter uploads for the tests: real PEFT folders packed as archives, and crafted bad ones."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zipfile
from pathlib import Path
from typing import Any

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"


def read_adapter(folder: Path) -> dict[str, bytes]:
    return {CONFIG: (folder / CONFIG).read_bytes(), WEIGHTS: (folder / WEIGHTS).read_bytes()}


def tar_gz(files: dict[str, bytes], prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tar_with_link(files: dict[str, bytes], link_name: str, target: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(link_name)
        link.type = tarfile.SYMTYPE
        link.linkname = target
        tar.addfile(link)
    return buf.getvalue()


def zip_bytes(files: dict[str, bytes], prefix: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(prefix + name, data)
    return buf.getvalue()


def safetensors(tensors: dict[str, tuple[str, list[int]]]) -> bytes:
    """A structurally valid safetensors file with zeroed data (dtype, shape per tensor)."""
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8}
    header: dict[str, Any] = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = sizes[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0" * offset


def lora_tensors(rank: int, layers: int = 2, hidden: int = 128, inter: int = 256, kv: int = 64) -> dict[str, Any]:
    """Tensor specs of a LoRA on the tiny model's q/k/v/o/gate/up/down projections."""
    shapes = {
        "self_attn.q_proj": (hidden, hidden),
        "self_attn.k_proj": (hidden, kv),
        "self_attn.v_proj": (hidden, kv),
        "self_attn.o_proj": (hidden, hidden),
        "mlp.gate_proj": (hidden, inter),
        "mlp.up_proj": (hidden, inter),
        "mlp.down_proj": (inter, hidden),
    }
    out: dict[str, Any] = {}
    for layer in range(layers):
        for module, (fan_in, fan_out) in shapes.items():
            base = f"base_model.model.model.layers.{layer}.{module}"
            out[f"{base}.lora_A.weight"] = ("F32", [rank, fan_in])
            out[f"{base}.lora_B.weight"] = ("F32", [fan_out, rank])
    return out


def lora_config(rank: int = 8, **overrides: Any) -> bytes:
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "base_model_name_or_path": "tiny-base",
    }
    config.update(overrides)
    return json.dumps(config).encode()


def zip_with_symlink(files: dict[str, bytes], link_name: str, target: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        info = zipfile.ZipInfo(link_name)
        info.external_attr = 0o120777 << 16  # S_IFLNK
        zf.writestr(info, target)
    return buf.getvalue()


def zip_encrypted(files: dict[str, bytes]) -> bytes:
    """A zip whose members are flagged encrypted (reading them would ask for a password)."""
    data = bytearray(zip_bytes(files))
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local and central headers
        at = data.find(signature)
        while at != -1:
            data[at + flags_at] |= 0x1
            at = data.find(signature, at + 4)
    return bytes(data)


def raw_safetensors(header: Any, data_bytes: int = 64) -> bytes:
    """A safetensors file with exactly this header (however malformed), then zeroed data."""
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0" * data_bytes
