"""Webhook delivery: POST a JSON body, signed with HMAC-SHA256 when a secret is set, retried with backoff on
connection errors and 5xx. Deliveries run as tracked tasks, drained on shutdown: a slow or dead webhook never
delays or fails the answer to the request."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from urllib.parse import urlsplit

import aiohttp

from pyworker.tasks import TaskSet

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Webhook-Signature"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSender:
    def __init__(self, session: aiohttp.ClientSession, *, attempts: int = 5, backoff: float = 1.0) -> None:
        self.session = session
        self.attempts = attempts
        self.backoff = backoff
        self._tasks = TaskSet()

    def send(self, url: str, body: bytes, *, secret: str | None, timeout: float, request_id: str) -> None:
        """Deliver in the background (tracked; see :meth:`drain`)."""
        self._tasks.spawn(self.deliver(url, body, secret=secret, timeout=timeout, request_id=request_id),
                          name=f"webhook-{request_id}")

    async def deliver(self, url: str, body: bytes, *, secret: str | None, timeout: float, request_id: str) -> bool:
        headers = {"Content-Type": "application/json"}
        if secret:
            headers[SIGNATURE_HEADER] = signature(secret, body)
        parts = urlsplit(url)  # user:password@ or a query string may carry a token: keep them out of the log
        target = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"
        for attempt in range(1, self.attempts + 1):
            try:
                async with self.session.post(url, data=body, headers=headers,
                                             timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                    if resp.status < 500:
                        if resp.status >= 400:
                            log.warning("webhook %s for request %s answered %d; not retried", target,
                                        request_id, resp.status)
                            return False
                        log.info("webhook %s for request %s delivered (%d)", target, request_id, resp.status)
                        return True
                    reason = f"HTTP {resp.status}"
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                reason = type(exc).__name__
            if attempt < self.attempts:
                delay = self.backoff * 2 ** (attempt - 1)
                log.info("webhook %s for request %s failed (%s); retry %d of %d in %.1f s", target, request_id,
                         reason, attempt, self.attempts - 1, delay)
                await asyncio.sleep(delay)
        log.warning("webhook %s for request %s not delivered after %d attempts (%s)", target, request_id,
                    self.attempts, reason)
        return False

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for deliveries under way, then cancel the rest."""
        if cancelled := await self._tasks.drain(grace):
            log.warning("%d webhook deliveries cancelled at shutdown", cancelled)
