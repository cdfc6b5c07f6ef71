"""ComfyUI's websocket messages as typed events. No I/O.

Text frames are JSON ``{"type": ..., "data": {...}}``. The envelope is decoded first with ``data`` kept raw,
then ``data`` is decoded by the one decoder built for its type. A type this module does not know (ComfyUI
grows new ones) comes back as :class:`Unknown` with the raw bytes, never as an error.

Binary frames start with a 4-byte big-endian type (1 preview image, 2 unencoded preview, 3 text,
4 preview image with metadata) followed by the payload: :func:`decode_binary` exposes the type.
"""

from __future__ import annotations

import enum
from typing import Any, Final

import msgspec


class Status(msgspec.Struct, frozen=True):
    """``status``: ComfyUI's queue length (sent on connect with our ``sid`` and whenever the queue changes)."""

    queue_remaining: int
    sid: str | None = None


class ExecutionStart(msgspec.Struct, frozen=True):
    prompt_id: str
    timestamp: int  # ms since the epoch, ComfyUI's clock


class ExecutionCached(msgspec.Struct, frozen=True):
    prompt_id: str
    nodes: list[str]
    timestamp: int


class Executing(msgspec.Struct, frozen=True):
    """A node starts; ``node is None`` means the prompt finished (any outcome) and its history is written.

    On a reconnect ComfyUI re-sends the current node without ``prompt_id``."""

    node: str | None
    prompt_id: str | None = None
    display_node: str | None = None


class Progress(msgspec.Struct, frozen=True):
    value: int
    max: int
    prompt_id: str | None = None
    node: str | None = None


class Executed(msgspec.Struct, frozen=True):
    """A node's UI output, e.g. ``{"images": [{"filename", "subfolder", "type"}], "text": ["..."]}``."""

    node: str
    prompt_id: str
    output: dict[str, Any] | None = None
    display_node: str | None = None


class ExecutionSuccess(msgspec.Struct, frozen=True):
    prompt_id: str
    timestamp: int


class ExecutionError(msgspec.Struct, frozen=True):
    prompt_id: str
    node_id: str
    node_type: str
    exception_message: str
    exception_type: str
    timestamp: int = 0
    executed: list[str] = []
    traceback: list[str] = []  # kept for the operator's debug log; never sent to clients


class ExecutionInterrupted(msgspec.Struct, frozen=True):
    prompt_id: str
    node_id: str
    node_type: str
    timestamp: int = 0
    executed: list[str] = []


class Unknown(msgspec.Struct, frozen=True):
    """A message type this module does not decode (``progress_state``, ``feature_flags``, newer ones)."""

    type: str
    data: msgspec.Raw


Event = (
    Status
    | ExecutionStart
    | ExecutionCached
    | Executing
    | Progress
    | Executed
    | ExecutionSuccess
    | ExecutionError
    | ExecutionInterrupted
    | Unknown
)


class _Envelope(msgspec.Struct):
    type: str
    data: msgspec.Raw = msgspec.Raw(b"null")


class _StatusData(msgspec.Struct):
    class _Inner(msgspec.Struct):
        class _ExecInfo(msgspec.Struct):
            queue_remaining: int = 0

        exec_info: _ExecInfo = msgspec.field(default_factory=_ExecInfo)

    status: _Inner | None = None
    sid: str | None = None


_envelope: Final = msgspec.json.Decoder(_Envelope)
_status: Final = msgspec.json.Decoder(_StatusData)
_decoders: Final[dict[str, msgspec.json.Decoder[Any]]] = {
    "execution_start": msgspec.json.Decoder(ExecutionStart),
    "execution_cached": msgspec.json.Decoder(ExecutionCached),
    "executing": msgspec.json.Decoder(Executing),
    "progress": msgspec.json.Decoder(Progress),
    "executed": msgspec.json.Decoder(Executed),
    "execution_success": msgspec.json.Decoder(ExecutionSuccess),
    "execution_error": msgspec.json.Decoder(ExecutionError),
    "execution_interrupted": msgspec.json.Decoder(ExecutionInterrupted),
}


class MalformedMessage(ValueError):
    """A text frame that is not JSON, or a known type whose data does not have the documented shape."""


def decode_text(frame: str | bytes) -> Event:
    """Decode one text frame. Raises :class:`MalformedMessage` for a frame that is not what ComfyUI sends."""
    try:
        env = _envelope.decode(frame)
        if env.type == "status":
            st = _status.decode(env.data)
            queue = st.status.exec_info.queue_remaining if st.status else 0
            return Status(queue_remaining=queue, sid=st.sid)
        decoder = _decoders.get(env.type)
        if decoder is None:
            return Unknown(type=env.type, data=env.data)
        event: Event = decoder.decode(env.data)
        return event
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedMessage(str(exc)) from None


class BinaryType(enum.IntEnum):
    PREVIEW_IMAGE = 1
    UNENCODED_PREVIEW_IMAGE = 2
    TEXT = 3
    PREVIEW_IMAGE_WITH_METADATA = 4


class BinaryFrame(msgspec.Struct, frozen=True):
    """A binary frame: its type (an int, :class:`BinaryType` when known) and the payload after the header."""

    kind: int
    payload: bytes

    @property
    def known(self) -> bool:
        return self.kind in BinaryType._value2member_map_


def decode_binary(frame: bytes) -> BinaryFrame:
    if len(frame) < 4:
        raise MalformedMessage(f"binary frame of {len(frame)} bytes has no 4-byte type header")
    return BinaryFrame(kind=int.from_bytes(frame[:4], "big"), payload=frame[4:])
