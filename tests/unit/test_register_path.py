"""Which folders the admin API may register an adapter from (ADAPTER_REGISTER_ROOT), checked like an upload."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.adapters.upload import UploadLimits, registered_folder
from gateway.adapters.validation import InvalidAdapter
from gateway.engine.client import EngineInfo
from gateway.errors import InvalidRequest, PermissionDenied
from tests.support.adapters import CONFIG, WEIGHTS, lora_config, lora_tensors, safetensors

INFO = EngineInfo(base_model="tiny-base", max_model_len=1024, max_lora_rank=8)
LIMITS = UploadLimits(10**7, None)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "good").mkdir(parents=True)
    (tmp_path / "root" / "good" / CONFIG).write_bytes(lora_config())
    (tmp_path / "root" / "good" / WEIGHTS).write_bytes(safetensors(lora_tensors(8)))
    return tmp_path / "root"


def test_a_folder_under_the_root_is_checked_and_accepted(root: Path) -> None:
    folder, spec = registered_folder(str(root / "good"), root, INFO, LIMITS)
    assert folder == (root / "good").resolve() and spec.rank == 8
    assert registered_folder("good", root, INFO, LIMITS)[0] == folder  # relative: under the root


def test_unset_root_turns_registration_by_path_off(root: Path) -> None:
    with pytest.raises(PermissionDenied, match="ADAPTER_REGISTER_ROOT"):
        registered_folder(str(root / "good"), None, INFO, LIMITS)


def test_nothing_outside_the_root_even_through_links(root: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / CONFIG).write_bytes(lora_config())
    (root / "linked").mkdir()
    (root / "linked" / CONFIG).symlink_to(tmp_path / "outside" / CONFIG)  # one file escapes
    (root / "linked" / WEIGHTS).write_bytes(safetensors(lora_tensors(8)))
    (root / "escape").symlink_to(tmp_path / "outside", target_is_directory=True)
    for path in ("/etc", str(tmp_path / "outside"), "../outside", str(root / "escape"), str(root / "linked")):
        with pytest.raises(PermissionDenied, match="outside ADAPTER_REGISTER_ROOT"):
            registered_folder(path, root, INFO, LIMITS)


def test_missing_files_and_bad_paths_are_400_bad_configs_422(root: Path) -> None:
    (root / "empty").mkdir()
    with pytest.raises(InvalidRequest, match=r"No adapter_config\.json or adapter_model\.safetensors"):
        registered_folder("empty", root, INFO, LIMITS)
    with pytest.raises(InvalidRequest, match="not a usable path"):
        registered_folder("bad\0name", root, INFO, LIMITS)
    (root / "good" / CONFIG).write_bytes(b"{nope")
    with pytest.raises(InvalidAdapter, match="not valid JSON"):
        registered_folder("good", root, INFO, LIMITS)
