"""Readiness: ComfyUI answering over HTTP and the benchmark finished. A supervisor task watches ComfyUI
(restarting the embedded one if its process dies) and runs the benchmark once ComfyUI answers.

A crashed or unreachable ComfyUI sets ``error_msg`` until it answers again; a client's broken workflow never
does (that is the job's own failure)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pyworker.benchmark import Benchmark, Report, summary
from pyworker.comfy_ws import ComfyClient
from pyworker.embedded import EmbeddedComfyUI
from pyworker.errors import ComfyError, WorkerError

log = logging.getLogger(__name__)


class Readiness:
    def __init__(self, *, needs_benchmark: bool, refuse_slow: bool, on_change: Callable[[], None],
                 needs_key: bool = False) -> None:
        self.started = time.monotonic()
        self.has_key = not needs_key  # the autoscaler's public key, needed to check signed requests
        self.key_error: str | None = None
        self.needs_benchmark = needs_benchmark
        self.refuse_slow = refuse_slow
        self.on_change = on_change
        self.comfy_ok = False
        self.comfy_error: str | None = None
        self.report: Report | None = None
        self.benchmark_error: str | None = None
        self.ready_at: float | None = None

    @property
    def ready(self) -> bool:
        return self.ready_at is not None and self.comfy_ok and self.has_key

    @property
    def loadtime(self) -> float:
        return self.ready_at - self.started if self.ready_at is not None else 0.0

    @property
    def error_msg(self) -> str:
        if self.comfy_error:
            return self.comfy_error
        if self.key_error:
            return self.key_error
        if self.benchmark_error:
            return self.benchmark_error
        if self.report is not None and self.report.verdict == "slow":
            return f"benchmark: {self.report.message}"
        return ""

    def why_not_ready(self) -> str:
        if not self.comfy_ok:
            return self.comfy_error or "ComfyUI is starting"
        if not self.has_key:
            return self.key_error or "fetching the autoscaler's public key"
        if self.benchmark_error:
            return self.benchmark_error
        return "the start-up benchmark is running"

    def set_comfy(self, ok: bool, error: str | None = None) -> None:
        if ok != self.comfy_ok or error != self.comfy_error:
            self.comfy_ok, self.comfy_error = ok, error
            log.log(logging.INFO if ok else logging.WARNING, "ComfyUI %s", "answers" if ok else f"is down: {error}")
            self._check_ready()
            self.on_change()

    def set_key(self, has_key: bool, error: str | None = None) -> None:
        self.has_key, self.key_error = has_key, error
        self.on_change()

    def set_benchmark(self, report: Report | None, error: str | None = None) -> None:
        self.report, self.benchmark_error = report, error
        self._check_ready()
        self.on_change()

    def _check_ready(self) -> None:
        if self.ready_at is not None or not self.comfy_ok:
            return
        if self.needs_benchmark and (self.report is None or (self.refuse_slow and self.report.verdict == "slow")):
            return
        self.ready_at = time.monotonic()
        log.info("ready after %.1f s", self.loadtime)


async def supervise(readiness: Readiness, comfy: ComfyClient, embedded: EmbeddedComfyUI | None,
                    benchmark: Benchmark | None, on_report: Callable[[Report], None], *, every: float = 1.0) -> None:
    """Run until cancelled: probe ComfyUI, restart the embedded one when it died, run the benchmark once."""
    while True:
        try:
            await _supervise_once(readiness, comfy, embedded, benchmark, on_report)
        except Exception:  # a bug or an unexpected failure must not end supervision
            log.exception("supervisor round failed")
        await asyncio.sleep(every)


async def _supervise_once(readiness: Readiness, comfy: ComfyClient, embedded: EmbeddedComfyUI | None,
                          benchmark: Benchmark | None, on_report: Callable[[Report], None]) -> None:
    if embedded is not None and embedded.process is not None and embedded.process.returncode is not None:
        readiness.set_comfy(False, f"ComfyUI exited with {embedded.process.returncode}; restarting it")
        try:
            await embedded.start()
        except ComfyError as exc:
            readiness.set_comfy(False, f"ComfyUI could not be restarted: {exc.message.splitlines()[0]}")
    try:
        await comfy.api.system_stats()
        readiness.set_comfy(True)
    except ComfyError:
        readiness.set_comfy(False, f"ComfyUI at {comfy.url} is not answering")
    if readiness.comfy_ok and benchmark is not None and readiness.report is None \
            and readiness.benchmark_error is None:
        try:
            report = await benchmark.run()
        except ComfyError as exc:  # ComfyUI went away meanwhile: the next round retries
            readiness.set_comfy(False, f"ComfyUI failed during the benchmark: {exc.message}")
        except WorkerError as exc:
            log.error("benchmark failed: %s", exc.message)
            readiness.set_benchmark(None, f"benchmark failed: {exc.message}")
        except Exception as exc:  # e.g. an unreadable BENCHMARK_WORKFLOW: an error to report, never ready
            log.error("benchmark failed: %s: %s", type(exc).__name__, exc)
            readiness.set_benchmark(None, f"benchmark failed: {type(exc).__name__}: {exc}")
        else:
            for line in summary(report).splitlines():
                (log.warning if report.verdict == "slow" else log.info)("%s", line)
            on_report(report)
            readiness.set_benchmark(report)
