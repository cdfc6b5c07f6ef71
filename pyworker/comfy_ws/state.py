"""The life of one prompt, fed ComfyUI's events. No I/O: the caller supplies each event's arrival time.

    SUBMITTED --execution_start--> RUNNING --execution_success-----> SUCCEEDED
        |                             |------execution_error-------> FAILED
        +-----------------------------+------execution_interrupted-> INTERRUPTED

Outputs come from ``executed`` events (or from ``/history`` after a websocket gap, see
:meth:`PromptState.apply_history`). Per-node times are measured between consecutive ``executing`` events
(ComfyUI sends no per-node timestamps); the prompt's own start and end use ComfyUI's timestamps.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from pyworker.comfy_ws.events import (
    Event,
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    Progress,
)


class Phase(enum.Enum):
    SUBMITTED = "submitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.INTERRUPTED)


class Output(msgspec.Struct, frozen=True):
    """One item of a node's UI output: a file (``filename`` set) or a text (``text`` set)."""

    node_id: str
    output_type: str  # the key in ComfyUI's output: images, gifs, videos, audio, files, text, ...
    filename: str | None = None
    subfolder: str = ""
    type: str = "output"
    text: str | None = None


class NodeTiming(msgspec.Struct, frozen=True):
    node_id: str
    class_type: str
    ms: float
    cached: bool = False


class NodeFailure(msgspec.Struct, frozen=True):
    node_id: str
    node_type: str
    exception_type: str
    exception_message: str


class Update(msgspec.Struct, frozen=True):
    """What a progress callback receives: the prompt's phase and, while running, the node and its progress."""

    prompt_id: str
    phase: Phase
    node: str | None = None
    class_type: str | None = None
    value: int | None = None
    max: int | None = None
    it_s: float | None = None


def outputs_of(node_id: str, ui: dict[str, Any] | None) -> list[Output]:
    """Every output ComfyUI reports for a node; ``type: "temp"`` previews are not outputs."""
    found: list[Output] = []
    for kind, items in (ui or {}).items():
        if not isinstance(items, list):
            continue
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("filename"), str):
                if item.get("type", "output") == "temp":
                    continue
                found.append(
                    Output(
                        node_id=node_id,
                        output_type=kind,
                        filename=item["filename"],
                        subfolder=str(item.get("subfolder") or ""),
                        type=str(item.get("type") or "output"),
                    )
                )
            elif isinstance(item, str):
                found.append(Output(node_id=node_id, output_type=kind, text=item))
    return found


class PromptState:
    """Everything known about one prompt. Feed it events with :meth:`feed`; read the fields."""

    def __init__(self, prompt_id: str, class_types: dict[str, str] | None = None) -> None:
        self.prompt_id = prompt_id
        self.class_types = class_types or {}
        self.phase = Phase.SUBMITTED
        self.outputs: list[Output] = []
        self.cached: list[str] = []
        self.nodes: list[NodeTiming] = []
        self.failure: NodeFailure | None = None
        self.started_ms: int | None = None  # ComfyUI's clock
        self.ended_ms: int | None = None
        self.history_written = False  # ``executing`` with node null seen
        # it/s of each node that reported progress, from its first to its second-to-last progress event: ComfyUI
        # often delivers a node's last event late (its post-prompt garbage collection holds the GIL while the
        # event waits to be sent; 430 ms seen on a CPU), which would understate the rate. With only two events,
        # from the first to the last.
        self.node_rates: dict[str, float] = {}
        self.started_at: float | None = None  # arrival times of the start and end events
        self.ended_at: float | None = None
        self.node: str | None = None
        self.value: int | None = None
        self.max: int | None = None
        self.it_s: float | None = None
        self._node_started: float | None = None
        self._run_start: tuple[int, float] | None = None  # (value, time) of the current progress run
        self._last_value: int | None = None

    def class_type(self, node_id: str | None) -> str | None:
        return self.class_types.get(node_id) if node_id is not None else None

    def update(self) -> Update:
        running = self.phase is Phase.RUNNING
        return Update(
            prompt_id=self.prompt_id,
            phase=self.phase,
            node=self.node if running else None,
            class_type=self.class_type(self.node) if running else None,
            value=self.value if running else None,
            max=self.max if running else None,
            it_s=self.it_s if running else None,
        )

    def feed(self, event: Event, now: float) -> Update | None:
        """Apply one event that arrived at ``now`` (seconds, any monotonic clock). Returns an update for
        progress callbacks when something an observer cares about changed, else None."""
        if self.phase.terminal:
            if isinstance(event, Executing) and event.node is None:
                self.history_written = True
            return None
        match event:
            case ExecutionStart(timestamp=ts):
                self.phase = Phase.RUNNING
                self.started_ms, self.started_at = ts, now
                return self.update()
            case ExecutionCached(nodes=nodes):
                self._start_running()
                self.cached = list(nodes)
                self.nodes.extend(
                    NodeTiming(node_id=n, class_type=self.class_type(n) or "", ms=0.0, cached=True)
                    for n in nodes
                )
                return None
            case Executing(node=None):
                # Finished without a terminal event reaching us: the caller must ask /history.
                self._close_node(now)
                self.history_written = True
                return None
            case Executing(node=node):
                self._start_running()
                if node == self.node:  # re-sent on reconnect
                    return None
                self._close_node(now)
                self.node, self._node_started = node, now
                self.value = self.max = None
                self.it_s = None
                self._run_start = self._last_value = None
                return self.update()
            case Progress(value=value, max=maximum, node=node):
                self._start_running()
                if node is not None and node != self.node:
                    self._close_node(now)
                    self.node, self._node_started = node, now
                    self._run_start = None
                if self._run_start is None or self._last_value is None or value <= self._last_value:
                    self._run_start = (value, now)
                    self.it_s = None
                else:
                    v0, t0 = self._run_start
                    if now > t0:
                        before = self.it_s
                        self.it_s = (value - v0) / (now - t0)
                        if self.node is not None:
                            self.node_rates[self.node] = before if before is not None else self.it_s
                self._last_value, self.value, self.max = value, value, maximum
                return self.update()
            case Executed(node=node, output=ui):
                self.outputs.extend(outputs_of(node, ui))
                return None
            case ExecutionSuccess(timestamp=ts):
                return self._end(Phase.SUCCEEDED, ts, now)
            case ExecutionError():
                self.failure = NodeFailure(
                    node_id=event.node_id,
                    node_type=event.node_type,
                    exception_type=event.exception_type,
                    exception_message=event.exception_message.strip(),
                )
                return self._end(Phase.FAILED, event.timestamp, now)
            case ExecutionInterrupted():
                self.failure = NodeFailure(
                    node_id=event.node_id,
                    node_type=event.node_type,
                    exception_type="Interrupted",
                    exception_message="the prompt was interrupted",
                )
                return self._end(Phase.INTERRUPTED, event.timestamp, now)
        return None

    def apply_history(self, entry: HistoryEntry, now: float) -> None:
        """Complete the state from ``/history/{id}`` (after a websocket gap, events may be missing)."""
        self.outputs = [o for node, ui in entry.outputs.items() for o in outputs_of(node, ui)]
        for name, data in entry.status.messages if entry.status else []:
            event = _history_events.get(name)
            if event is None:
                continue
            try:
                decoded: Event = msgspec.convert(data, event)
            except msgspec.ValidationError:
                continue
            if isinstance(decoded, ExecutionCached) and self.cached:
                continue
            self.feed(decoded, now)
        self.history_written = True
        if not self.phase.terminal and entry.status is not None:
            # A history entry without a terminal message: believe its status string.
            self.phase = Phase.SUCCEEDED if entry.status.completed else Phase.FAILED

    def _start_running(self) -> None:
        if self.phase is Phase.SUBMITTED:
            self.phase = Phase.RUNNING

    def result(self, submitted_at: float, warnings: dict[str, Any] | None = None) -> PromptResult:
        started = self.started_at if self.started_at is not None else submitted_at
        ended = self.ended_at if self.ended_at is not None else started
        return PromptResult(
            prompt_id=self.prompt_id, phase=self.phase, outputs=list(self.outputs), cached=list(self.cached),
            nodes=list(self.nodes), failure=self.failure, warnings=warnings or {},
            node_rates=dict(self.node_rates), queued_s=max(0.0, started - submitted_at),
            execution_s=max(0.0, ended - started),
            comfy_ms=(self.ended_ms - self.started_ms) if self.ended_ms and self.started_ms else None,
            started_ms=self.started_ms, ended_ms=self.ended_ms,
        )

    def _close_node(self, now: float) -> None:
        if self.node is not None and self._node_started is not None:
            ms = (now - self._node_started) * 1000.0
            self.nodes.append(NodeTiming(node_id=self.node, class_type=self.class_type(self.node) or "", ms=ms))
        self.node = self._node_started = None

    def _end(self, phase: Phase, ts: int, now: float) -> Update:
        self._close_node(now)
        self.phase = phase
        self.ended_ms, self.ended_at = ts or None, now
        return self.update()


class PromptResult(msgspec.Struct, frozen=True):
    """One finished prompt. ``queued_s``/``execution_s`` are measured here from event arrival times;
    ``comfy_ms`` is ComfyUI's own start-to-end from its timestamps (None when they were missed)."""

    prompt_id: str
    phase: Phase
    outputs: list[Output]
    cached: list[str]
    nodes: list[NodeTiming]
    failure: NodeFailure | None
    warnings: dict[str, Any]  # node_errors of branches ComfyUI dropped although it accepted the prompt
    node_rates: dict[str, float]
    queued_s: float
    execution_s: float
    comfy_ms: int | None = None
    started_ms: int | None = None  # ComfyUI's clock (ms since the epoch), from its execution_start
    ended_ms: int | None = None  # from its execution_success / _error / _interrupted

    @property
    def succeeded(self) -> bool:
        return self.phase is Phase.SUCCEEDED


class HistoryStatus(msgspec.Struct):
    status_str: str = ""
    completed: bool = False
    messages: list[tuple[str, dict[str, Any]]] = []


class HistoryEntry(msgspec.Struct):
    """One prompt's entry in ``GET /history/{id}``."""

    outputs: dict[str, dict[str, Any]] = {}
    status: HistoryStatus | None = None


_history_events: dict[str, type[Any]] = {
    "execution_start": ExecutionStart,
    "execution_cached": ExecutionCached,
    "execution_success": ExecutionSuccess,
    "execution_error": ExecutionError,
    "execution_interrupted": ExecutionInterrupted,
}
