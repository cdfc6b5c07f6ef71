"""The job API over one ComfyUI: ``result = await comfy.run(workflow, on_progress=...)``.

One websocket per client, with its own clientId, opened before any prompt is submitted; a reader task routes
each event to the prompt it belongs to. When the socket drops it reconnects with jittered backoff, and then
reconciles every open prompt through ``/queue`` and ``/history/{id}`` (events sent meanwhile are lost).
When ComfyUI is gone (websocket and HTTP refused for ``gone_after`` seconds) every open job fails with
:class:`~pyworker.errors.ComfyUnreachable`; the reader keeps trying, so a restarted ComfyUI is picked up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiofiles
import aiohttp
import websockets
from websockets.asyncio.client import ClientConnection, connect

from pyworker.comfy_ws.api import ComfyAPI, Queue
from pyworker.comfy_ws.events import (
    ExecutionStart,
    MalformedMessage,
    Status,
    Unknown,
    decode_binary,
    decode_text,
)
from pyworker.comfy_ws.state import Output, Phase, PromptResult, PromptState, Update
from pyworker.errors import ComfyError, ComfyProtocolError, ComfyUnreachable

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Update], None]
MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # unencoded previews of large images are big


def backoff(first: float = 0.05, cap: float = 2.0) -> Iterator[float]:
    """Jittered, capped exponential delays: 0.05, 0.1, 0.2 ... 2.0 s, each scaled by a random 0.5-1.0."""
    delay = first
    while True:
        yield delay * random.uniform(0.5, 1.0)
        delay = min(cap, delay * 2)


def _inside(root: Path, output: Output) -> Path:
    """``root/subfolder/filename``, refused when ComfyUI's names would lead outside ``root``."""
    path = Path(os.path.normpath(os.path.join(root, output.subfolder, output.filename or "")))
    if not path.is_relative_to(os.path.normpath(root)) or path == Path(os.path.normpath(root)):
        raise ComfyProtocolError(f"ComfyUI reported an output outside its folder: {output.filename!r}")
    return path


class _Job:
    __slots__ = ("future", "gap", "last_event", "on_progress", "state", "submitted", "submitted_at")

    def __init__(self, state: PromptState, on_progress: ProgressCallback | None) -> None:
        self.state = state
        self.on_progress = on_progress
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.gap = False  # the websocket dropped while this prompt was open: its events may be incomplete
        self.submitted = False
        self.submitted_at = self.last_event = time.monotonic()

    def resolve(self, exc: BaseException | None = None) -> None:
        if not self.future.done():
            if exc is None:
                self.future.set_result(None)
            else:
                self.future.set_exception(exc)


class ComfyClient:
    def __init__(
        self,
        url: str,
        *,
        output_dir: Path | None = None,
        gone_after: float = 3.0,
        session: aiohttp.ClientSession | None = None,
        forget_history: bool = True,
        check_silent_after: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.ws_url = self.url.replace("http", "ws", 1)
        self.client_id = uuid.uuid4().hex
        self.output_dir = output_dir.resolve() if output_dir else None
        self.gone_after = gone_after
        self.queue_remaining = 0
        self._session = session
        self._own_session = session is None
        self._api: ComfyAPI | None = None
        self._jobs: dict[str, _Job] = {}
        self._running: str | None = None  # the prompt ComfyUI is executing, for events without prompt_id
        self._connected = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._unknown_seen: set[str] = set()
        # Finished prompts whose /history entries are deleted in batches, off the request path, so that ComfyUI's
        # history does not grow without bound because of this worker.
        self.forget_history = forget_history
        self._forget: list[tuple[float, str]] = []  # (when it ended, prompt id)
        self._maintenance: asyncio.Task[None] | None = None
        # A prompt silent this long is checked against /queue and /history: events can be lost without the
        # socket dropping (a ComfyUI that restarted between two pings). Silence alone never fails a prompt.
        self.check_silent_after = check_silent_after

    @property
    def api(self) -> ComfyAPI:
        if self._api is None:
            raise RuntimeError("ComfyClient used before start()")
        return self._api

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self) -> None:
        """Start the reader task. Returns at once; :meth:`run` waits for the websocket."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        self._api = ComfyAPI(self.url, self._session)
        self._reader = asyncio.create_task(self._read_forever(), name=f"comfy-ws-{self.client_id[:8]}")
        self._maintenance = asyncio.create_task(self._maintain(), name="comfy-maintenance")

    async def close(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
            self._maintenance = None
            await self._flush_forget(settle=0.0)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        self._fail_open(ComfyUnreachable("the worker is shutting down"))
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> ComfyClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_connected(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            raise ComfyUnreachable(f"no websocket to ComfyUI at {self.url} within {timeout:.1f} s") from None

    # -- the job API ---------------------------------------------------------------------------------------

    async def run(
        self,
        workflow: dict[str, Any],
        *,
        prompt_id: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> PromptResult:
        """Submit ``workflow`` (API format) and wait for its end. Returns the result whatever the outcome of
        the execution (check ``result.phase``); raises :class:`ComfyValidationError` when ComfyUI refuses the
        prompt and :class:`ComfyUnreachable` when ComfyUI is gone. Cancelling the awaiting task interrupts
        the prompt if it runs, or removes it from ComfyUI's queue if it waits."""
        await self.wait_connected(self.gone_after)
        pid = prompt_id or str(uuid.uuid4())
        class_types = {k: str(v.get("class_type", "")) for k, v in workflow.items() if isinstance(v, dict)}
        job = _Job(PromptState(pid, class_types), on_progress)
        self._jobs[pid] = job
        try:
            accepted = await self.api.submit(workflow, self.client_id, pid)
            job.submitted = True
            if job.gap and self.connected and not job.future.done():
                # The socket dropped while the prompt was being submitted: its events may be lost already.
                await self._settle(job, await self.api.queue())
            await job.future
            if job.gap or not job.state.phase.terminal:
                entry = await self.api.history_when_written(pid)
                if entry is not None:
                    job.state.apply_history(entry, time.monotonic())
            if not job.state.phase.terminal:
                raise ComfyProtocolError(f"prompt {pid} ended without a result in ComfyUI's history")
            return job.state.result(job.submitted_at, accepted.node_errors)
        except asyncio.CancelledError:
            await asyncio.shield(self._abandon(job))
            raise
        finally:
            self._jobs.pop(pid, None)
            if self.forget_history and job.submitted:
                self._forget.append((time.monotonic(), pid))

    async def _maintain(self, every: float = 0.5) -> None:
        """Delete finished prompts' history in batches; check prompts that have been silent for long."""
        last_check = time.monotonic()
        while True:
            await asyncio.sleep(every)
            try:
                await self._flush_forget()
                if time.monotonic() - last_check >= self.check_silent_after and self.connected:
                    last_check = time.monotonic()
                    await self._check_silent(last_check - self.check_silent_after)
            except Exception:  # never let maintenance die
                log.exception("ComfyUI maintenance round failed")

    async def _check_silent(self, before: float) -> None:
        silent = [j for j in self._jobs.values()
                  if j.submitted and not j.future.done() and j.last_event <= before]
        if silent:
            queue = await self.api.queue()
            for job in silent:
                await self._settle(job, queue)

    async def _flush_forget(self, settle: float = 1.0) -> None:
        """Delete the history of prompts that ended at least ``settle`` seconds ago (ComfyUI writes an entry a
        moment after the end event: deleting earlier would leave it behind)."""
        if not self._forget or self._api is None:
            return
        cutoff = time.monotonic() - settle
        batch = [pid for ended, pid in self._forget if ended <= cutoff]
        self._forget = [(ended, pid) for ended, pid in self._forget if ended > cutoff]
        if not batch:
            return
        try:
            await self.api.delete_history(batch)
        except ComfyError as exc:
            log.debug("could not delete %d history entries: %s", len(batch), exc)

    async def _abandon(self, job: _Job) -> None:
        pid, phase = job.state.prompt_id, job.state.phase
        if phase.terminal:
            return
        try:
            if phase is Phase.SUBMITTED:
                await self.api.delete_queued([pid])
            # Also when it looked queued: it may have started meanwhile. ComfyUI ignores it otherwise.
            await self.api.interrupt(pid)
            log.info("prompt %s abandoned by its caller: %s", pid,
                     "removed from the queue" if phase is Phase.SUBMITTED else "interrupted")
        except ComfyError as exc:
            log.warning("could not abandon prompt %s: %s", pid, exc)

    # -- outputs -------------------------------------------------------------------------------------------

    def local_path(self, output: Output) -> Path:
        """The output's file in ComfyUI's local output folder; never a path outside it."""
        if self.output_dir is None or output.filename is None:
            raise ValueError("no local output folder configured, or the output is not a file")
        return _inside(self.output_dir, output)

    async def fetch_output(self, output: Output, dest_dir: Path) -> Path:
        """A path to the output's bytes: the file itself when ComfyUI's output folder is local, else a copy
        streamed through ``/view`` into ``dest_dir``."""
        if self.output_dir is not None and output.type == "output":
            return self.local_path(output)
        if output.filename is None:
            raise ValueError("a text output has no file")
        dest = _inside(dest_dir, output)
        dest.parent.mkdir(parents=True, exist_ok=True)
        async with aiofiles.open(dest, "wb") as f:
            async for chunk in self.api.view(output.filename, output.subfolder, output.type):
                await f.write(chunk)
        return dest

    # -- the websocket -------------------------------------------------------------------------------------

    async def _read_forever(self) -> None:
        delays = backoff()
        down_since: float | None = None
        while True:
            try:
                async with connect(
                    f"{self.ws_url}/ws?clientId={self.client_id}", max_size=MAX_MESSAGE_BYTES,
                    open_timeout=5, ping_interval=20, ping_timeout=60, compression=None,
                ) as ws:
                    await self._on_connected(ws, reconnect=down_since is not None)
                    delays, down_since = backoff(), None
                    async for frame in ws:
                        self._dispatch(frame)
                log.warning("ComfyUI closed the websocket")
            except (TimeoutError, OSError, websockets.exceptions.WebSocketException, ComfyError) as exc:
                if down_since is None or self._connected.is_set():
                    log.warning("websocket to ComfyUI lost or refused: %s", type(exc).__name__)
            except Exception:  # never let the reader die: drop the socket and start again
                log.exception("unexpected error on the websocket to ComfyUI; reconnecting")
            self._connected.clear()
            for job in self._jobs.values():
                job.gap = True
            now = time.monotonic()
            down_since = down_since or now
            if now - down_since >= self.gone_after and self._jobs and not await self._http_alive():
                self._fail_open(ComfyUnreachable(f"ComfyUI at {self.url} is gone (connection refused)"))
            await asyncio.sleep(next(delays))

    async def _on_connected(self, ws: ClientConnection, reconnect: bool) -> None:
        if reconnect:
            log.info("websocket to ComfyUI re-established; reconciling %d open prompt(s)", len(self._jobs))
            await self._reconcile()
        self._connected.set()

    async def _http_alive(self) -> bool:
        try:
            await self.api.system_stats()
            return True
        except ComfyError:
            return False

    def _fail_open(self, exc: ComfyError) -> None:
        for job in self._jobs.values():
            job.resolve(exc)

    async def _reconcile(self) -> None:
        """After a gap: settle every submitted prompt from ComfyUI's queue and history. A failure here
        propagates, so that the connection is dropped and the whole reconciliation tried again."""
        jobs = [j for j in self._jobs.values() if j.submitted and not j.future.done()]
        if jobs:
            queue = await self.api.queue()
            for job in jobs:
                await self._settle(job, queue)

    async def _settle(self, job: _Job, queue: Queue) -> None:
        """Settle one prompt whose events may have been missed: still in ComfyUI's queue, or finished (its
        history), or lost (ComfyUI restarted)."""
        pid = job.state.prompt_id
        if pid in queue.running_ids():
            self._running = pid
            return
        if pid in queue.pending_ids():
            return
        entry = await self.api.history_when_written(pid, attempts=5)
        if entry is not None:
            job.state.apply_history(entry, time.monotonic())
            job.resolve()
        else:
            job.resolve(ComfyUnreachable(f"ComfyUI lost prompt {pid} (was it restarted?)"))

    def _dispatch(self, frame: str | bytes) -> None:
        now = time.monotonic()
        try:
            if isinstance(frame, bytes):
                decode_binary(frame)  # previews: recognised and skipped
                return
            event = decode_text(frame)
        except MalformedMessage as exc:
            log.warning("skipped a malformed ComfyUI message: %s", exc)
            return
        if isinstance(event, Unknown):
            if event.type not in self._unknown_seen:
                self._unknown_seen.add(event.type)
                log.debug("ComfyUI message type %r is not decoded; skipped", event.type)
            return
        if isinstance(event, Status):
            self.queue_remaining = event.queue_remaining
            return
        if isinstance(event, ExecutionStart):
            self._running = event.prompt_id
        pid = event.prompt_id or self._running
        job = self._jobs.get(pid) if pid is not None else None
        if job is None:
            return
        job.last_event = now
        update = job.state.feed(event, now)
        if update is not None and job.on_progress is not None:
            try:
                job.on_progress(update)
            except Exception:
                log.exception("a progress callback failed")
        if job.state.phase.terminal or job.state.history_written:
            if pid == self._running:
                self._running = None
            job.resolve()
