"""Each package declares its public API once, and the layering holds."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("contracts", "producers", "consumers", "kpr")


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_exists_once(name: str) -> None:
    """``__all__`` lists real attributes, each once."""
    package = importlib.import_module(name)
    exported = list(package.__all__)
    assert len(exported) == len(set(exported))
    for symbol in exported:
        assert hasattr(package, symbol), f"{name}.{symbol} is exported but missing"


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("contracts", {"producers", "consumers", "kpr"}),
        ("producers", {"consumers", "kpr"}),
        ("consumers", {"producers", "kpr"}),
    ],
)
def test_packages_depend_only_downwards(package: str, forbidden: set[str]) -> None:
    """contracts imports no side; producers and consumers never import each other."""
    for path in sorted((ROOT / package).rglob("*.py")):
        assert not (_imported_packages(path) & forbidden), f"{path.relative_to(ROOT)}"
