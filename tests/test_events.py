"""The protocol core fed frames recorded from a real ComfyUI 0.3.75 (tests/record_messages.py)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from pyworker.comfy_ws.events import (
    BinaryType,
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    MalformedMessage,
    Progress,
    Status,
    Unknown,
    decode_binary,
    decode_text,
)

DATA = Path(__file__).resolve().parent / "data"
RECORDINGS = sorted(p.stem for p in DATA.glob("*.jsonl"))


def frames(name: str) -> list[str]:
    return [line for line in (DATA / f"{name}.jsonl").read_text().splitlines() if '"binary"' not in line]


@pytest.mark.parametrize("name", RECORDINGS)
def test_every_recorded_frame_decodes_to_its_type(name: str) -> None:
    expected = {
        "status": Status, "execution_start": ExecutionStart, "execution_cached": ExecutionCached,
        "executing": Executing, "progress": Progress, "executed": Executed,
        "execution_success": ExecutionSuccess, "execution_error": ExecutionError,
        "execution_interrupted": ExecutionInterrupted,
    }
    for frame in frames(name):
        kind = json.loads(frame)["type"]
        event = decode_text(frame)
        assert isinstance(event, expected.get(kind, Unknown)), (kind, event)


def test_recordings_cover_every_outcome() -> None:
    kinds = {json.loads(f)["type"] for name in RECORDINGS for f in frames(name)}
    assert {"execution_success", "execution_error", "execution_interrupted", "execution_cached",
            "progress", "executed", "progress_state"} <= kinds


def test_status_carries_queue_and_sid() -> None:
    first = decode_text(frames("steps_success")[0])
    assert isinstance(first, Status)
    assert first.sid and first.queue_remaining == 0


def test_unknown_type_kept_raw() -> None:
    event = decode_text(b'{"type": "brand_new", "data": {"x": [1, 2]}}')
    assert isinstance(event, Unknown)
    assert event.type == "brand_new"
    assert msgspec.json.decode(event.data) == {"x": [1, 2]}


def test_executing_null_and_without_prompt_id() -> None:
    done = decode_text('{"type": "executing", "data": {"node": null, "prompt_id": "p"}}')
    assert done == Executing(node=None, prompt_id="p")
    resent = decode_text('{"type": "executing", "data": {"node": "4"}}')  # sent on reconnect
    assert resent == Executing(node="4", prompt_id=None)


@pytest.mark.parametrize("frame", [
    b"not json",
    b'{"data": {}}',
    b'{"type": "progress", "data": {"value": "x", "max": 2}}',
    b'{"type": "execution_error", "data": {"prompt_id": "p"}}',
])
def test_malformed_frames_raise_one_error_type(frame: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_text(frame)


def test_binary_frames_by_header() -> None:
    frame = decode_binary((1).to_bytes(4, "big") + b"\x00\x00\x00\x01JPEGDATA")
    assert frame.kind == BinaryType.PREVIEW_IMAGE and frame.known
    assert frame.payload.endswith(b"JPEGDATA")
    assert not decode_binary((99).to_bytes(4, "big")).known
    with pytest.raises(MalformedMessage):
        decode_binary(b"\x00\x01")
