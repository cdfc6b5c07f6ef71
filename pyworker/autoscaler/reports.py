"""Status reports to the autoscaler: ``/worker_status/`` at least every 10 s and promptly on change, and
``/delete_requests/`` for finished requests, to every address of ``REPORT_ADDR``. Each POST is tried 3 times
with short timeouts; reporting runs in its own task and never blocks a request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Final

import aiohttp
import msgspec

from pyworker.admission import Ledger, RequestRecord

log = logging.getLogger(__name__)
_encoder: Final = msgspec.json.Encoder()


class WorkerStatus(msgspec.Struct, kw_only=True):
    """Exactly the fields the autoscaler reads (``num_requests_recieved`` is spelt as it expects)."""

    id: int | str
    mtoken: str
    version: str
    loadtime: float
    cur_load: float
    rej_load: float
    new_load: float
    error_msg: str
    max_perf: float
    cur_perf: float
    cur_capacity: float
    max_capacity: float
    num_requests_working: int
    num_requests_recieved: int
    additional_disk_usage: float
    working_request_idxs: list[int]
    url: str


class DeleteRequests(msgspec.Struct, kw_only=True):
    worker_id: int | str
    mtoken: str
    requests: list[RequestRecord]


class Reporter:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        ledger: Ledger,
        *,
        addresses: list[str],
        worker_id: int | str,
        mtoken: str,
        version: str,
        url: str,
        state: Callable[[], tuple[float, str]],  # (loadtime, error_msg) now
        every: float = 10.0,
        tick: float = 0.2,
        timeout: float = 2.0,
    ) -> None:
        self.session, self.ledger = session, ledger
        self.addresses = [a.rstrip("/") for a in addresses if a.strip()]
        self.worker_id, self.mtoken, self.version, self.url = worker_id, mtoken, version, url
        self.state = state
        self.every, self.tick, self.timeout = every, tick, timeout
        self.sent = 0

    def status(self) -> WorkerStatus:
        loadtime, error_msg = self.state()
        new, rejected, served = self.ledger.take_period()
        return WorkerStatus(
            id=self.worker_id, mtoken=self.mtoken, version=self.version, loadtime=round(loadtime, 3),
            cur_load=self.ledger.cur_load, rej_load=rejected, new_load=new, error_msg=error_msg,
            max_perf=self.ledger.max_perf, cur_perf=served, cur_capacity=0.0, max_capacity=0.0,
            num_requests_working=self.ledger.counters.working,
            num_requests_recieved=self.ledger.counters.received, additional_disk_usage=0.0,
            working_request_idxs=self.ledger.working_request_idxs(), url=self.url,
        )

    async def run(self) -> None:
        """Report until cancelled: on change and at least every ``every`` seconds, at most once a ``tick``."""
        last = -self.every
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.ledger.changed.wait(), max(0.0, self.every - (time.monotonic() - last)))
            self.ledger.changed.clear()
            last = time.monotonic()
            await self.send_once()
            await asyncio.sleep(self.tick)

    async def send_once(self) -> None:
        status = _encoder.encode(self.status())
        finished = self.ledger.take_finished()
        posts = [self._post(a + "/worker_status/", status) for a in self.addresses]
        if finished:
            body = _encoder.encode(DeleteRequests(worker_id=self.worker_id, mtoken=self.mtoken, requests=finished))
            posts += [self._post(a + "/delete_requests/", body) for a in self.addresses]
        results = await asyncio.gather(*posts)
        if finished and not any(results[len(self.addresses):]):
            self.ledger.finished[:0] = finished  # no address took them: the next round sends them again
        self.sent += 1

    async def _post(self, url: str, body: bytes) -> bool:
        for attempt in range(3):
            try:
                async with self.session.post(url, data=body, headers={"Content-Type": "application/json"},
                                             timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                    if resp.status < 400:
                        return True
                    reason = f"HTTP {resp.status}"
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                reason = type(exc).__name__
            if attempt < 2:
                await asyncio.sleep(0.2 * 2**attempt)
        log.warning("report to %s failed after 3 tries (%s)", url, reason)
        return False
