"""Admission and the request ledger: what the worker has received, is working on and has finished.

Every request costs ``cost`` (1 by default; an autoscaler's request carries its own). A request is refused
with 429 when the work already admitted would keep it waiting longer than ``max_queue_time``, computed from
the benchmark's throughput (``max_perf``, cost per second). Counters always add up:
``received = working + succeeded + failed + cancelled + rejected``.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from typing import Final, Literal

import msgspec

from pyworker.errors import WorkerError

VastStatus = Literal["Created", "Started", "Success", "Error", "Cancelled", "Rejected"]
_ids: Final = itertools.count(1)


class TooBusy(WorkerError):
    status = 429

    def __init__(self, retry_after: int, wait_s: float, limit_s: float) -> None:
        super().__init__(f"the queue is full: the work ahead would take about {wait_s:.1f} s "
                         f"(the limit is {limit_s:.1f} s); retry after {retry_after} s")
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RequestRecord(msgspec.Struct, kw_only=True):
    """One request's bookkeeping; finished ones are reported to the autoscaler's /delete_requests/."""

    request_idx: int | None
    success: bool = False
    status: VastStatus = "Created"
    entered_queue_at: float
    work_started_at: float | None = None
    work_completed_at: float | None = None


class Counters(msgspec.Struct):
    received: int = 0
    working: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    rejected: int = 0


class Ticket:
    """An admitted request. ``start()`` when it reaches ComfyUI, then exactly one ``finish()``."""

    def __init__(self, ledger: Ledger, key: int, cost: float, record: RequestRecord) -> None:
        self.ledger, self.key, self.cost, self.record = ledger, key, cost, record

    def start(self) -> None:
        self.record.status = "Started"
        self.record.work_started_at = time.time()
        self.ledger.changed.set()

    def finish(self, status: Literal["Success", "Error", "Cancelled"]) -> None:
        self.ledger._finish(self, status)


class Ledger:
    def __init__(self, *, max_queue_time: float = 30.0) -> None:
        self.max_queue_time = max_queue_time
        self.max_perf = 0.0  # cost per second, from the benchmark; 0 until it ran
        self.counters = Counters()
        self.working: dict[int, Ticket] = {}
        self.finished: list[RequestRecord] = []  # not yet reported
        # Per reporting period (reset by take_period): new, rejected and served cost.
        self.period_new = 0.0
        self.period_rejected = 0.0
        self.period_served = 0.0
        self.changed = asyncio.Event()

    @property
    def cur_load(self) -> float:
        return sum(t.cost for t in self.working.values())

    def wait_s(self) -> float:
        return self.cur_load / self.max_perf if self.max_perf > 0 else 0.0

    def admit(self, cost: float, request_idx: int | None = None) -> Ticket:
        now = time.time()
        record = RequestRecord(request_idx=request_idx, entered_queue_at=now)
        self.counters.received += 1
        self.changed.set()
        wait = self.wait_s()
        if wait > self.max_queue_time:
            record.status, record.work_completed_at = "Rejected", now
            self.counters.rejected += 1
            self.period_rejected += cost
            self._report(record)
            raise TooBusy(max(1, math.ceil(wait - self.max_queue_time)), wait, self.max_queue_time)
        ticket = Ticket(self, next(_ids), cost, record)
        self.working[ticket.key] = ticket
        self.counters.working += 1
        self.period_new += cost
        return ticket

    def _finish(self, ticket: Ticket, status: Literal["Success", "Error", "Cancelled"]) -> None:
        if self.working.pop(ticket.key, None) is None:
            return  # finished already
        record = ticket.record
        record.status, record.work_completed_at = status, time.time()
        record.success = status != "Error"
        self.counters.working -= 1
        if status == "Success":
            self.counters.succeeded += 1
            self.period_served += ticket.cost
        elif status == "Error":
            self.counters.failed += 1
        else:
            self.counters.cancelled += 1
            self.period_new -= ticket.cost
        self._report(record)
        self.changed.set()

    def _report(self, record: RequestRecord) -> None:
        if record.request_idx is not None:
            self.finished.append(record)

    def working_request_idxs(self) -> list[int]:
        return [t.record.request_idx for t in self.working.values() if t.record.request_idx is not None]

    def take_period(self) -> tuple[float, float, float]:
        """(new, rejected, served) cost since the last call."""
        taken = (max(self.period_new, 0.0), self.period_rejected, self.period_served)
        self.period_new = self.period_rejected = self.period_served = 0.0
        return taken

    def take_finished(self) -> list[RequestRecord]:
        taken, self.finished = self.finished, []
        return taken
