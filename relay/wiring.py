"""Turn `Settings` into what one session needs, for `serve` and `mic` alike: the only place a session's parts are
chosen.

Boundary: builds, does no I/O of its own beyond reading the credentials (`Credentials.load`, on every connect, so a
rotated token is used). It chooses the core's policy (`session_policy`, server tools included), where the upstream
is and how to authenticate (`upstream_target`), what the bridge is given (`session_environment`: the event log,
the session's files and the URLs they are served under, metrics, the kept-audio budget, recording), and the
embedded simulator's options (`simulator_options`). The server (`relay.server`) and the local audio client
(`relay.mic`) call these and hand the results to `relay.bridge.SessionBridge`; the CLI's `sim` command uses
`simulator_options` too. Nothing below the server and the mic side imports this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from relay.bridge import BridgeEnvironment
from relay.core.keptaudio import KeptAudioBudget
from relay.core.policy import SessionPolicy
from relay.core.resume import ResumePolicy
from relay.core.toolset import ToolSet
from relay.credentials import Credentials, qualify_model, resolve_model
from relay.errors import ConfigError
from relay.eventlog.writer import EventLog
from relay.links.base import UpstreamTarget
from relay.links.upstream import upstream_url
from relay.metrics import RelayMetrics
from relay.recording import RECORDING_FILE, RecordingOptions
from relay.saving import SessionFiles
from relay.settings import Settings
from relay.simulator import SimulatorOptions


def session_policy(settings: Settings, *, relay_events: bool, tools: ToolSet | None) -> SessionPolicy:
    """The operator's settings the core needs, for one session (`serve` and `mic` alike). `tools` is
    `load_tools(settings)`, loaded once by the caller: handlers are imported and checked at start, not per session."""
    return SessionPolicy(
        retrieve_after_done=settings.retrieve_after_done,
        clamp_truncate=settings.clamp_truncate,
        pinned_session=dict(settings.pinned_session),
        blocked_client_events=frozenset(settings.blocked_client_events),
        max_item_audio_seconds=settings.max_item_audio_seconds,
        relay_events=relay_events,
        tools=tools,
        resume=ResumePolicy(
            attempts=settings.upstream_resume_attempts,
            buffer_seconds=settings.resume_buffer_seconds,
            history_max_bytes=settings.resume_history_max_bytes,
            gap_max_bytes=settings.max_client_backlog_bytes,
        )
        if settings.upstream_resume
        else None,
    )


def upstream_target(
    settings: Settings,
    base_url: str,
    *,
    simulator: bool,
    client_model: str | None = None,
    client_query: Iterable[tuple[str, str]] = (),
) -> UpstreamTarget:
    """Where a session connects, with which credentials and model (the model rules are in docs/configuration.md).
    Reads the credentials afresh: call it on every connect so a rotated token is used. The client's model counts
    only with `allow_client_model`; the embedded simulator needs no folder-qualified model."""
    credentials = Credentials.load(settings)
    if settings.allow_client_model and client_model:
        model = qualify_model(client_model, credentials.folder_id)
    elif simulator and not settings.model:
        model = "sim"
    else:
        model = resolve_model(settings, credentials)
    url = upstream_url(base_url, model, client_query, settings.forward_query_params)
    return UpstreamTarget(url, credentials.authorization_header(), settings.upstream_connect_timeout_seconds)


def item_audio_url(session_id: str, item_id: str) -> str:
    """The URL the server serves an item's saved WAV under (`relay.server` routes it)."""
    return f"/relay/sessions/{session_id}/items/{item_id}.wav"


def recording_url(session_id: str) -> str:
    """The URL the server serves a session's recording under (`relay.server` routes it)."""
    return f"/relay/sessions/{session_id}/{RECORDING_FILE}"


def session_files(data_dir: Path) -> SessionFiles:
    """A session's files under `data_dir`, named by the URLs the server serves them under."""
    return SessionFiles(data_dir, audio_url=item_audio_url, recording_url=recording_url)


def recording_options(settings: Settings, *, from_frames: bool = True) -> RecordingOptions | None:
    """The recording settings of a session, or None when `record_sessions` is off (docs/recording.md)."""
    if not settings.record_sessions:
        return None
    return RecordingOptions(
        rate=settings.recording_rate,
        max_lead_seconds=settings.recording_max_lead_seconds,
        max_seconds=settings.recording_max_seconds,
        from_frames=from_frames,
    )


def session_environment(
    settings: Settings,
    event_log: EventLog,
    *,
    metrics: RelayMetrics | None = None,
    kept_audio: KeptAudioBudget | None = None,
    record_frames: bool = True,
) -> BridgeEnvironment:
    """What the bridge is given for a session. `kept_audio` is the process's one budget when several sessions
    share it (`serve`); without one a budget of `kept_audio_max_bytes` is made. `record_frames=False` records
    the devices instead of the frames (`mic`: what the microphone captured, what the speaker played)."""
    return BridgeEnvironment(
        event_log=event_log,
        files=session_files(Path(settings.data_dir)),
        retrieve_timeout=settings.retrieve_timeout_seconds,
        metrics=metrics,
        kept_audio=kept_audio if kept_audio is not None else KeptAudioBudget(settings.kept_audio_max_bytes),
        recording=recording_options(settings, from_frames=record_frames),
    )


def simulator_options(settings: Settings, *, embedded: bool = False) -> SimulatorOptions:
    """The simulator's options from settings (the `sim` command; `serve` and `mic` with `--upstream sim` embed the
    same). An `embedded` simulator answers only the process that started it and asks no key: `sim_api_key` is the
    `sim` command's (a config shared by `sim` and `serve` must not lock `serve` out of its own simulator)."""
    api_key = settings.sim_api_key.reveal() if settings.sim_api_key is not None and not embedded else None
    try:
        return SimulatorOptions(flavour=settings.sim_flavour, speed=settings.sim_speed, api_key=api_key, knobs=settings.sim_knobs)
    except ValueError as exc:
        raise ConfigError("sim_knobs", "", str(exc)) from None


def open_event_log(settings: Settings, *, stdout_fd: int = 1) -> EventLog:
    """The process's event log, as the settings describe it (docs/event-log.md); `serve` and `mic` alike.
    `stdout_fd` is where `event_log_stdout` writes: `mic` passes 2, its log stream (stdout is its display)."""
    return EventLog(
        Path(settings.log_dir) if settings.event_log_files else None,
        to_stdout=settings.event_log_stdout,
        stdout_fd=stdout_fd,
        max_queue_bytes=settings.log_queue_max_bytes,
        keep_text=settings.log_content,
        max_session_bytes=settings.max_session_log_bytes,
        audio_hash=settings.log_audio_hash,
    )
