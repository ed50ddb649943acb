"""Event type strings of the realtime protocol (GA names) and of the relay's own records.

The one place where a type string is spelled out: everything else imports these constants. Pure data, no I/O.
`CLIENT_EVENT_TYPES` and `SERVER_EVENT_TYPES` are the known sets (used e.g. to bound metric label
cardinality); the relay forwards unknown types untouched, so nothing may treat these sets as a whitelist.
"""

from __future__ import annotations

from typing import Final

# Client -> server.
SESSION_UPDATE: Final = "session.update"
INPUT_AUDIO_BUFFER_APPEND: Final = "input_audio_buffer.append"
INPUT_AUDIO_BUFFER_COMMIT: Final = "input_audio_buffer.commit"
INPUT_AUDIO_BUFFER_CLEAR: Final = "input_audio_buffer.clear"
CONVERSATION_ITEM_CREATE: Final = "conversation.item.create"
CONVERSATION_ITEM_RETRIEVE: Final = "conversation.item.retrieve"
CONVERSATION_ITEM_TRUNCATE: Final = "conversation.item.truncate"
CONVERSATION_ITEM_DELETE: Final = "conversation.item.delete"
RESPONSE_CREATE: Final = "response.create"
RESPONSE_CANCEL: Final = "response.cancel"
OUTPUT_AUDIO_BUFFER_CLEAR: Final = "output_audio_buffer.clear"

CLIENT_EVENT_TYPES: Final[frozenset[str]] = frozenset(
    {
        SESSION_UPDATE,
        INPUT_AUDIO_BUFFER_APPEND,
        INPUT_AUDIO_BUFFER_COMMIT,
        INPUT_AUDIO_BUFFER_CLEAR,
        CONVERSATION_ITEM_CREATE,
        CONVERSATION_ITEM_RETRIEVE,
        CONVERSATION_ITEM_TRUNCATE,
        CONVERSATION_ITEM_DELETE,
        RESPONSE_CREATE,
        RESPONSE_CANCEL,
        OUTPUT_AUDIO_BUFFER_CLEAR,
    }
)

# Server -> client.
ERROR: Final = "error"
SESSION_CREATED: Final = "session.created"
SESSION_UPDATED: Final = "session.updated"
INPUT_AUDIO_BUFFER_SPEECH_STARTED: Final = "input_audio_buffer.speech_started"
INPUT_AUDIO_BUFFER_SPEECH_STOPPED: Final = "input_audio_buffer.speech_stopped"
INPUT_AUDIO_BUFFER_COMMITTED: Final = "input_audio_buffer.committed"
INPUT_AUDIO_BUFFER_CLEARED: Final = "input_audio_buffer.cleared"
CONVERSATION_ITEM_ADDED: Final = "conversation.item.added"
CONVERSATION_ITEM_CREATED: Final = "conversation.item.created"  # older name of .added, seen live
CONVERSATION_ITEM_DONE: Final = "conversation.item.done"
CONVERSATION_ITEM_RETRIEVED: Final = "conversation.item.retrieved"
CONVERSATION_ITEM_TRUNCATED: Final = "conversation.item.truncated"
CONVERSATION_ITEM_DELETED: Final = "conversation.item.deleted"
INPUT_AUDIO_TRANSCRIPTION_COMPLETED: Final = "conversation.item.input_audio_transcription.completed"
INPUT_AUDIO_TRANSCRIPTION_DELTA: Final = "conversation.item.input_audio_transcription.delta"
INPUT_AUDIO_TRANSCRIPTION_FAILED: Final = "conversation.item.input_audio_transcription.failed"
RESPONSE_CREATED: Final = "response.created"
RESPONSE_DONE: Final = "response.done"
RESPONSE_OUTPUT_ITEM_ADDED: Final = "response.output_item.added"
RESPONSE_OUTPUT_ITEM_DONE: Final = "response.output_item.done"
RESPONSE_CONTENT_PART_ADDED: Final = "response.content_part.added"
RESPONSE_CONTENT_PART_DONE: Final = "response.content_part.done"
RESPONSE_OUTPUT_AUDIO_DELTA: Final = "response.output_audio.delta"
RESPONSE_OUTPUT_AUDIO_DONE: Final = "response.output_audio.done"
RESPONSE_OUTPUT_TEXT_DELTA: Final = "response.output_text.delta"
RESPONSE_OUTPUT_TEXT_DONE: Final = "response.output_text.done"
RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DELTA: Final = "response.output_audio_transcript.delta"
RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DONE: Final = "response.output_audio_transcript.done"
RESPONSE_FUNCTION_CALL_ARGUMENTS_DELTA: Final = "response.function_call_arguments.delta"
RESPONSE_FUNCTION_CALL_ARGUMENTS_DONE: Final = "response.function_call_arguments.done"
RATE_LIMITS_UPDATED: Final = "rate_limits.updated"

SERVER_EVENT_TYPES: Final[frozenset[str]] = frozenset(
    {
        ERROR,
        SESSION_CREATED,
        SESSION_UPDATED,
        INPUT_AUDIO_BUFFER_SPEECH_STARTED,
        INPUT_AUDIO_BUFFER_SPEECH_STOPPED,
        INPUT_AUDIO_BUFFER_COMMITTED,
        INPUT_AUDIO_BUFFER_CLEARED,
        CONVERSATION_ITEM_ADDED,
        CONVERSATION_ITEM_CREATED,
        CONVERSATION_ITEM_DONE,
        CONVERSATION_ITEM_RETRIEVED,
        CONVERSATION_ITEM_TRUNCATED,
        CONVERSATION_ITEM_DELETED,
        INPUT_AUDIO_TRANSCRIPTION_COMPLETED,
        INPUT_AUDIO_TRANSCRIPTION_DELTA,
        INPUT_AUDIO_TRANSCRIPTION_FAILED,
        RESPONSE_CREATED,
        RESPONSE_DONE,
        RESPONSE_OUTPUT_ITEM_ADDED,
        RESPONSE_OUTPUT_ITEM_DONE,
        RESPONSE_CONTENT_PART_ADDED,
        RESPONSE_CONTENT_PART_DONE,
        RESPONSE_OUTPUT_AUDIO_DELTA,
        RESPONSE_OUTPUT_AUDIO_DONE,
        RESPONSE_OUTPUT_TEXT_DELTA,
        RESPONSE_OUTPUT_TEXT_DONE,
        RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DELTA,
        RESPONSE_OUTPUT_AUDIO_TRANSCRIPT_DONE,
        RESPONSE_FUNCTION_CALL_ARGUMENTS_DELTA,
        RESPONSE_FUNCTION_CALL_ARGUMENTS_DONE,
        RATE_LIMITS_UPDATED,
    }
)

# Events whose base64 payload is audio (the field is `audio` for appends, `delta` for output deltas).
AUDIO_PAYLOAD_FIELD: Final = {
    INPUT_AUDIO_BUFFER_APPEND: "audio",
    RESPONSE_OUTPUT_AUDIO_DELTA: "delta",
}

# Error codes of the relay (docs/forwarding.md, docs/client-input.md). `type` of every relay-made error event is
# invalid_request_error for client faults, server_error for upstream trouble.
CODE_INVALID_JSON: Final = "invalid_json"
CODE_MISSING_TYPE: Final = "missing_type"
CODE_BINARY_NOT_SUPPORTED: Final = "binary_not_supported"
CODE_EVENT_BLOCKED: Final = "event_blocked"
CODE_UPSTREAM_UNAVAILABLE: Final = "upstream_unavailable"
CODE_UPSTREAM_DISCONNECTED: Final = "upstream_disconnected"
CODE_SESSION_EXPIRED: Final = "session_expired"
CODE_TOO_MANY_SESSIONS: Final = "too_many_sessions"
CODE_CLIENT_TOO_SLOW: Final = "client_too_slow"
# A field the relay must act on has the wrong type; the error's `param` names the field.
CODE_INVALID_VALUE: Final = "invalid_value"
# Handling one client frame failed inside the relay (a bug); the session goes on.
CODE_RELAY_ERROR: Final = "relay_error"

# The relay's own records and events (docs/event-log.md, docs/forwarding.md).
RELAY_SESSION_STARTED: Final = "relay.session_started"
RELAY_UPSTREAM_CONNECTED: Final = "relay.upstream_connected"
RELAY_AUDIO_SAVED: Final = "relay.audio_saved"
RELAY_RETRIEVE_FAILED: Final = "relay.retrieve_failed"
RELAY_CLIENT_ERROR: Final = "relay.client_error"
RELAY_SESSION_ENDED: Final = "relay.session_ended"
RELAY_LOG_GAP: Final = "relay.log_gap"
RELAY_AUDIO_NOT_SAVED: Final = "relay.audio_not_saved"  # an item id unfit for a file name, or a failed write
RELAY_TOOL_CALL: Final = "relay.tool_call"  # a server-side tool ran (docs/tools.md)
RELAY_UPSTREAM_BINARY_FRAME: Final = "relay.upstream_binary_frame"  # noted, not forwarded (the protocol is text)
RELAY_INTERNAL_ERROR: Final = "relay.internal_error"  # {error, traceback}: a contained relay bug
# An upstream event whose type starts with `relay.`: dropped, as only the relay speaks relay.* (docs/security.md).
RELAY_UPSTREAM_EVENT_DROPPED: Final = "relay.upstream_event_dropped"

# Upstream resume (docs/resume.md): a dropped upstream is reconnected and the session rebuilt on it.
RELAY_UPSTREAM_INTERRUPTED: Final = "relay.upstream_interrupted"
RELAY_UPSTREAM_RESUME_ATTEMPT: Final = "relay.upstream_resume_attempt"
RELAY_UPSTREAM_RESUMED: Final = "relay.upstream_resumed"
RELAY_UPSTREAM_RESUME_FAILED: Final = "relay.upstream_resume_failed"

# Session recording (docs/recording.md).
RELAY_RECORDING_SAVED: Final = "relay.recording_saved"
RELAY_RECORDING_STOPPED: Final = "relay.recording_stopped"

# Every type of record the relay writes in a session's log of its own (each a `relay.*` name above).
RELAY_RECORD_TYPES: Final = frozenset(
    {
        RELAY_SESSION_STARTED,
        RELAY_UPSTREAM_CONNECTED,
        RELAY_AUDIO_SAVED,
        RELAY_RETRIEVE_FAILED,
        RELAY_CLIENT_ERROR,
        RELAY_SESSION_ENDED,
        RELAY_LOG_GAP,
        RELAY_AUDIO_NOT_SAVED,
        RELAY_TOOL_CALL,
        RELAY_UPSTREAM_BINARY_FRAME,
        RELAY_INTERNAL_ERROR,
        RELAY_UPSTREAM_EVENT_DROPPED,
        RELAY_UPSTREAM_INTERRUPTED,
        RELAY_UPSTREAM_RESUME_ATTEMPT,
        RELAY_UPSTREAM_RESUMED,
        RELAY_UPSTREAM_RESUME_FAILED,
        RELAY_RECORDING_SAVED,
        RELAY_RECORDING_STOPPED,
    }
)

# Every frame the relay makes carries an event_id with this prefix (docs/forwarding.md).
RELAY_EVENT_ID_PREFIX: Final = "relay_"
RELAY_RETRIEVE_EVENT_ID_PREFIX: Final = "relay_retrieve_"
