"""Every third-party module that gateway/, billing/, devstack/ and bench/ import is a distribution declared in
pyproject.toml (dependencies or an extra), so a clean install has it and nothing arrives only by luck."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "billing", "devstack", "bench")


def normalized(requirement: str) -> str:
    """A requirement's distribution name, normalized as PEP 503 does ("SQLAlchemy[asyncio]>=2" -> "sqlalchemy")."""
    name = re.split(r"[\s\[<>=!~;@]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {}).values()
    return {normalized(r) for r in [*project["dependencies"], *(r for group in extras for r in group)]}


def imported() -> dict[str, set[str]]:
    """Each top-level module imported (at any depth, lazily or not) that is neither stdlib nor ours -> files."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGES:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_declared() -> None:
    modules = imported()
    assert {"litestar", "msgspec", "sqlalchemy"} <= modules.keys()  # the scan sees what it should
    distributions = packages_distributions()  # import name -> installed distributions that provide it
    names = declared()
    undeclared = {
        module: sorted(files)
        for module, files in modules.items()
        if not any(normalized(d) in names for d in distributions.get(module, [module]))
    }
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_requirement_names_are_normalized() -> None:
    assert normalized("SQLAlchemy[asyncio]>=2.1") == "sqlalchemy"
    assert normalized("uvloop>=0.19; sys_platform != 'win32'") == "uvloop"
    assert normalized("pydantic_settings") == normalized("Pydantic.Settings") == "pydantic-settings"
