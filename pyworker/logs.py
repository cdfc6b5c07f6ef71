"""Logging set-up (human-readable or JSON lines) and the operator's per-job progress log."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Final

import msgspec

from pyworker.comfy_ws import Phase, Update

jobs_log: Final = logging.getLogger("pyworker.jobs")
_encoder: Final = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, msg, and the record's ``fields`` (see :class:`JobLog`)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and record.exc_info[1] is not None:
            entry["error"] = _describe(record.exc_info[1])
        return _encoder.encode(entry).decode()


class TextFormatter(logging.Formatter):
    """Like the default, but an exception is one line (type, message, where), never a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        record.exc_info, record.exc_text = None, None
        line = super().format(record)
        return f"{line} [{_describe(exc)}]" if exc is not None else line


def _describe(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" at {tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def configure(fmt: str = "text", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiobotocore", "botocore", "websockets", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class JobLog:
    """The operator's view of one job: a line per state change, progress at most once a second."""

    def __init__(self, request_id: str, min_gap: float = 1.0) -> None:
        self.request_id = request_id
        self.started = time.monotonic()
        self.min_gap = min_gap
        self._last_progress = 0.0
        self._phase: Phase | None = None

    def event(self, state: str, message: str = "", **fields: Any) -> None:
        elapsed = time.monotonic() - self.started
        all_fields = {"request_id": self.request_id, "state": state, "elapsed_s": round(elapsed, 3), **fields}
        detail = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        jobs_log.info("job %s %s%s%s elapsed=%.2fs", self.request_id, state, f" {detail}" if detail else "",
                      f" {message}" if message else "", elapsed, extra={"fields": all_fields})

    def __call__(self, u: Update) -> None:
        if u.phase is not self._phase:
            self._phase = u.phase
            if u.phase is Phase.RUNNING:
                self.event("running", prompt_id=u.prompt_id)
            return  # the end of execution is logged by the service, with its outcome
        if u.value is None or u.max is None:
            return
        now = time.monotonic()
        if now - self._last_progress < self.min_gap and u.value != u.max:
            return
        self._last_progress = now
        self.event("progress", prompt_id=u.prompt_id, node=u.node, class_type=u.class_type,
                   step=f"{u.value}/{u.max}", it_s=round(u.it_s, 2) if u.it_s else None)
