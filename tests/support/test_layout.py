"""The layout is the architecture (docs/architecture.md): imports run downwards, the core stays pure, no module
grows past what a newcomer reads in one sitting, and comments cite only what is in the repository."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("relay", "audio")
MAX_MODULE_LINES = 450
# The pure core may import only these outside itself (docs/architecture.md, "The core's calling contract").
CORE_ALLOWED_PREFIXES = ("relay.core", "orjson", "msgspec", "base64", "binascii", "copy", "re", "collections", "dataclasses",
                         "typing", "enum", "__future__", "itertools", "math", "json", "hashlib", "traceback")


def modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join(parts), path


def imports_of(name: str, path: Path) -> set[str]:
    """Every module `name` imports, at any depth of the file (lazy imports count too)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


ALL = dict(modules())


def internal_imports(name: str) -> set[str]:
    return {m for m in imports_of(name, ALL[name]) if m in ALL and m != name}


def test_no_library_module_imports_the_cli() -> None:
    offenders = {
        name: sorted(m for m in internal_imports(name) if m == "relay.cli" or m.startswith("relay.cli."))
        for name in ALL
        if not (name == "relay.cli" or name.startswith("relay.cli.") or name == "relay.__main__")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_core_imports_nothing_with_io() -> None:
    for name, path in ALL.items():
        if not name.startswith("relay.core"):
            continue
        outside = {m for m in imports_of(name, path) if not m.startswith(CORE_ALLOWED_PREFIXES)}
        assert outside == set(), f"{name} imports {sorted(outside)}"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def part(name: str) -> str:
    """The architectural part a module belongs to: its subpackage, or the module itself at the top."""
    return ".".join(name.split(".")[:2])


def test_no_import_cycle_between_modules() -> None:
    graph = {name: internal_imports(name) - {n for n in ALL if name.startswith(n + ".")} for name in ALL}
    assert _cycle(graph) is None


def test_no_import_cycle_between_parts() -> None:
    graph: dict[str, set[str]] = {}
    for name in ALL:
        graph.setdefault(part(name), set()).update(part(m) for m in internal_imports(name) if part(m) != part(name))
    assert _cycle(graph) is None


@pytest.mark.parametrize("name", sorted(ALL))
def test_module_fits_in_one_reading(name: str) -> None:
    lines = len(ALL[name].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{name} has {lines} lines; split it along a boundary"


OUTSIDE_DOCUMENT = re.compile(r"\bCONTRACT\b|\bC1[0-5]\b|\bC[1-9]\b(?!\+\+)|\bissue #?\d+", re.IGNORECASE)


def test_comments_cite_only_documents_in_the_repository() -> None:
    hits = []
    for path in ALL.values():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if OUTSIDE_DOCUMENT.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert hits == []


TEST_FILE_MENTION = re.compile(r"tests/[A-Za-z0-9_/]+\.py")


def test_every_test_file_the_docs_and_deploy_files_name_exists() -> None:
    """A doc or a deploy file that says where a rule is checked must name a test file that is there."""
    sources = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(p for p in (ROOT / "deploy").rglob("*") if p.is_file())]
    missing = sorted(
        f"{source.relative_to(ROOT)}: {name}"
        for source in sources
        for name in set(TEST_FILE_MENTION.findall(source.read_text(errors="replace")))
        if not (ROOT / name).exists()
    )
    assert missing == []
