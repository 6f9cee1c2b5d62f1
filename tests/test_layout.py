"""The house's import rules, checked on the source with `ast`: no package uses another package's private names
(``from X import _name`` or ``X._name`` where X is a different top-level package), and `runkit` imports no stage."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ("data", "tokenizer", "pretrain", "finetune", "serve")
PACKAGES = ("runkit", *STAGES)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def private_imports(path: Path, own: str, root: Path = REPO) -> list[str]:
    """``file:line: what`` for each private name of another top-level package that ``path`` imports or reads."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(root)
    found: list[str] = []
    foreign: dict[str, str] = {}  # local name -> the other top-level package it comes from
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if top in PACKAGES and top != own:
                for alias in node.names:
                    if _is_private(alias.name):
                        found.append(f"{rel}:{node.lineno}: from {node.module} import {alias.name}")
                    foreign[alias.asname or alias.name] = top
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in PACKAGES and top != own:
                    foreign[alias.asname or top] = top
                    if any(_is_private(part) for part in alias.name.split(".")):
                        found.append(f"{rel}:{node.lineno}: import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            root = node.value
            chain = [node.attr]
            while isinstance(root, ast.Attribute):
                chain.append(root.attr)
                root = root.value
            if isinstance(root, ast.Name) and root.id in foreign:
                found.append(f"{rel}:{node.lineno}: {root.id}.{'.'.join(reversed(chain))}")
    return found


def test_the_checker_finds_both_forms(tmp_path) -> None:
    src = tmp_path / "probe.py"
    src.write_text("from data.shards import _manifest\nimport data.atomic\nfrom data import atomic\n"
                   "x = data.atomic._helper\ny = atomic._other\nfrom tokenizer.model import _own\n")
    found = [line.split(": ", 1)[1] for line in private_imports(src, "tokenizer", root=tmp_path)]
    assert found == ["from data.shards import _manifest", "data.atomic._helper", "atomic._other"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_private_names_across_packages(package) -> None:
    found = [v for f in _files(package) for v in private_imports(f, package)]
    assert not found, "private names used across packages:\n" + "\n".join(found)


def test_runkit_imports_no_stage() -> None:
    for f in _files("runkit"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                assert name.split(".")[0] not in STAGES, f"{f.relative_to(REPO)} imports {name}"


MAX_MODULE_LINES = 450


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_is_too_long_to_read_in_one_sitting(package) -> None:
    long = {str(f.relative_to(REPO)): n for f in _files(package) if (n := len(f.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them on their seams): {long}"


def test_readme_layout_lists_every_module_and_nothing_else() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("## Layout (one line per module)", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^- `([\w/]+\.py)`:", section, flags=re.M))
    tree = {str(f.relative_to(REPO)) for p in PACKAGES for f in _files(p)}
    assert listed == tree, f"README layout: missing {sorted(tree - listed)}, gone {sorted(listed - tree)}"
