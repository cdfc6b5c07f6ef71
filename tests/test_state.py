"""The per-prompt state machine fed recorded sequences (no I/O)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from pyworker.comfy_ws.events import Executing, ExecutionStart, ExecutionSuccess, Progress, decode_text
from pyworker.comfy_ws.state import HistoryEntry, Phase, PromptState, Update

DATA = Path(__file__).resolve().parent / "data"


def replay(name: str, class_types: dict[str, str] | None = None, dt: float = 0.1) -> tuple[PromptState, list[Update]]:
    """Feed a recording, one event every ``dt`` seconds of a fake clock."""
    lines = [line for line in (DATA / f"{name}.jsonl").read_text().splitlines() if '"binary"' not in line]
    pid = next(json.loads(line)["data"]["prompt_id"] for line in lines if '"execution_start"' in line)
    state = PromptState(pid, class_types)
    updates = []
    for i, line in enumerate(lines):
        update = state.feed(decode_text(line), i * dt)
        if update is not None:
            updates.append(update)
    return state, updates


def history(name: str) -> HistoryEntry:
    return msgspec.json.decode((DATA / f"{name}.history.json").read_bytes(), type=HistoryEntry)


def test_success_with_progress_and_text_output() -> None:
    state, updates = replay("steps_success", {"1": "PyworkerSteps"})
    assert state.phase is Phase.SUCCEEDED and state.history_written
    progress = [u for u in updates if u.value is not None]
    assert [u.value for u in progress] == [1, 2, 3, 4, 5]
    assert all(u.max == 5 and u.node == "1" and u.class_type == "PyworkerSteps" for u in progress)
    lines = (DATA / "steps_success.jsonl").read_text().splitlines()
    at = [i * 0.1 for i, line in enumerate(lines) if '"type": "progress"' in line]  # the fake clock
    assert progress[-1].it_s == pytest.approx(4 / (at[-1] - at[0]))
    assert [(o.output_type, o.text) for o in state.outputs] == [("text", "5 steps, seed 1")]
    assert [n.node_id for n in state.nodes] == ["1"] and state.nodes[0].ms > 0
    assert state.started_ms and state.ended_ms and state.ended_ms >= state.started_ms


def test_cached_resubmission() -> None:
    state, _ = replay("steps_cached")
    assert state.phase is Phase.SUCCEEDED
    assert state.cached == ["1"]
    assert [n.cached for n in state.nodes] == [True]
    assert [o.text for o in state.outputs] == ["5 steps, seed 1"]  # executed is re-sent from the cache


def test_runtime_error() -> None:
    state, updates = replay("raise_error")
    assert state.phase is Phase.FAILED
    assert updates[-1].phase is Phase.FAILED
    assert state.failure is not None
    assert (state.failure.node_id, state.failure.node_type) == ("1", "PyworkerRaise")
    assert (state.failure.exception_type, state.failure.exception_message) == ("ValueError", "boom")


def test_interrupted() -> None:
    state, _ = replay("steps_interrupted")
    assert state.phase is Phase.INTERRUPTED
    assert state.failure is not None and state.failure.node_type == "PyworkerSteps"


def test_outputs_of_every_kind_and_temp_skipped() -> None:
    state, _ = replay("outputs_all_kinds")
    kinds = sorted(o.output_type for o in state.outputs)
    assert kinds == ["audio", "files", "gifs", "images", "text"]
    image = next(o for o in state.outputs if o.output_type == "images")
    assert image.subfolder == "pyworker_test" and image.filename and image.filename.endswith(".png")
    assert not any(o.filename and "_preview" in o.filename for o in state.outputs)


def test_sd15_default_graph() -> None:
    types = {"3": "KSampler", "4": "CheckpointLoaderSimple", "5": "EmptyLatentImage", "6": "CLIPTextEncode",
             "7": "CLIPTextEncode", "8": "VAEDecode", "9": "SaveImage"}
    state, updates = replay("sd15_default", types)
    assert state.phase is Phase.SUCCEEDED
    steps = [u for u in updates if u.value is not None]
    assert [(u.node, u.value) for u in steps] == [("3", v) for v in range(1, 6)]  # one per sampling step
    assert "3" in state.node_rates
    assert [n.node_id for n in state.nodes] == ["4", "5", "7", "6", "3", "8", "9"]
    assert [o.output_type for o in state.outputs] == ["images"]


@pytest.mark.parametrize("name", ["steps_success", "steps_cached", "raise_error", "steps_interrupted",
                                  "outputs_all_kinds", "sd15_default"])
def test_history_gives_the_same_outcome_as_events(name: str) -> None:
    from_events, _ = replay(name)
    pid = from_events.prompt_id
    from_history = PromptState(pid)
    from_history.feed(ExecutionStart(prompt_id=pid, timestamp=1), 0.0)  # events up to a gap, then none
    from_history.apply_history(history(name), 1.0)
    assert from_history.phase is from_events.phase
    assert sorted(from_history.outputs, key=repr) == sorted(from_events.outputs, key=repr)
    assert from_history.failure == from_events.failure
    assert from_history.cached == from_events.cached


def test_progress_restart_resets_rate_and_late_events_are_ignored() -> None:
    s = PromptState("p", {"3": "KSampler", "10": "KSampler"})
    s.feed(ExecutionStart(prompt_id="p", timestamp=1), 0.0)
    s.feed(Executing(node="3", prompt_id="p"), 0.0)
    for i in range(1, 5):
        s.feed(Progress(value=i, max=4, prompt_id="p", node="3"), i * 0.5)
    assert s.it_s == pytest.approx(2.0)
    u = s.feed(Progress(value=1, max=8, prompt_id="p", node="10"), 3.0)  # a second sampler restarts at 1
    assert u is not None and u.node == "10" and u.it_s is None
    s.feed(Progress(value=5, max=8, prompt_id="p", node="10"), 4.0)
    assert s.it_s == pytest.approx(4.0)
    assert s.node_rates == {"3": pytest.approx(2.0), "10": pytest.approx(4.0)}
    assert [n.node_id for n in s.nodes] == ["3"] and s.nodes[0].ms == pytest.approx(3000.0)
    s.feed(ExecutionSuccess(prompt_id="p", timestamp=5), 5.0)
    assert s.phase is Phase.SUCCEEDED
    assert s.feed(Progress(value=6, max=8, prompt_id="p", node="10"), 6.0) is None
    assert s.phase is Phase.SUCCEEDED and s.value == 5
