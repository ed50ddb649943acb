"""The page's static files are plain local ES modules: no CDN, no framework, no build step.

Reads relay/static/ and pyproject.toml only; no browser (the browser tier is in the other test_page_* modules).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "relay" / "static"
PAGE_FILES = {"index.html", "page.js", "page.css", "relay-client.js", "pcm16.js", "relay-audio-worklet.js"}


def test_every_page_file_exists_flat_in_relay_static() -> None:
    assert {p.name for p in STATIC.iterdir() if p.is_file()} >= PAGE_FILES


def test_the_package_data_glob_ships_every_page_file() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["relay"]
    for name in PAGE_FILES:
        assert any(Path("static", name).match(g) for g in globs), name


def test_no_file_loads_anything_from_another_host() -> None:
    for name in PAGE_FILES:
        text = (STATIC / name).read_text(encoding="utf-8")
        assert not re.search(r"""(src|href|import\s*\(?|from)\s*=?\s*["'](https?:)?//""", text), name


def test_module_imports_are_relative_to_the_module() -> None:
    # Relative specifiers keep the module working wherever a frontend serves the three files.
    for name in ("page.js", "relay-client.js"):
        for line in (STATIC / name).read_text(encoding="utf-8").splitlines():
            if line.startswith("import "):
                assert re.search(r'from "\./[a-z0-9-]+\.js";$', line), (name, line)


def test_the_page_only_references_its_own_files() -> None:
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    refs = set(re.findall(r'(?:src|href)="([^"]+)"', html))
    assert refs == {"/static/page.css", "/static/page.js", "data:,"}
