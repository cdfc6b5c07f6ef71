"""ComfyUI's HTTP API: one method per endpoint the worker uses, typed errors, no websocket."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

import aiohttp
import msgspec

from pyworker.comfy_ws.state import HistoryEntry
from pyworker.errors import ComfyProtocolError, ComfyUnreachable, ComfyValidationError

log = logging.getLogger(__name__)


class PromptAccepted(msgspec.Struct):
    prompt_id: str
    number: int = 0
    node_errors: dict[str, Any] = {}


class _PromptRefused(msgspec.Struct):
    error: dict[str, Any] | str = "unknown error"
    node_errors: dict[str, Any] = {}


class Queue(msgspec.Struct):
    queue_running: list[list[Any]] = []
    queue_pending: list[list[Any]] = []

    @staticmethod
    def _ids(items: list[list[Any]]) -> set[str]:
        return {str(item[1]) for item in items if len(item) > 1}

    def running_ids(self) -> set[str]:
        return self._ids(self.queue_running)

    def pending_ids(self) -> set[str]:
        return self._ids(self.queue_pending)


class UploadedImage(msgspec.Struct):
    name: str
    subfolder: str = ""
    type: str = "input"


_accepted: Final = msgspec.json.Decoder(PromptAccepted)
_refused: Final = msgspec.json.Decoder(_PromptRefused)
_history: Final = msgspec.json.Decoder(dict[str, HistoryEntry])
_queue: Final = msgspec.json.Decoder(Queue)
_uploaded: Final = msgspec.json.Decoder(UploadedImage)
_any: Final = msgspec.json.Decoder()
_encoder: Final = msgspec.json.Encoder()
_JSON: Final = {"Content-Type": "application/json"}


class ComfyAPI:
    """Calls to one ComfyUI at ``base_url`` over a shared aiohttp session."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session

    async def _request(
        self, method: str, path: str, body: object = None, data: aiohttp.FormData | None = None
    ) -> tuple[int, bytes]:
        payload = _encoder.encode(body) if body is not None else None
        try:
            async with self.session.request(
                method, self.base_url + path, data=payload if data is None else data,
                headers=_JSON if payload is not None else None,
            ) as resp:
                return resp.status, await resp.read()
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise ComfyUnreachable(f"ComfyUI at {self.base_url} is unreachable ({type(exc).__name__})") from None

    async def _json(self, method: str, path: str, body: object = None) -> Any:
        status, raw = await self._request(method, path, body)
        if status != 200:
            raise ComfyProtocolError(f"ComfyUI answered {status} to {method} {path}")
        return _any.decode(raw) if raw else None

    async def submit(self, workflow: dict[str, Any], client_id: str, prompt_id: str) -> PromptAccepted:
        """POST /prompt. A 400 raises :class:`ComfyValidationError`; a 200 may still carry ``node_errors``
        (ComfyUI dropped those branches): they are logged and returned."""
        status, raw = await self._request(
            "POST", "/prompt", {"prompt": workflow, "client_id": client_id, "prompt_id": prompt_id}
        )
        try:
            if status == 200:
                accepted = _accepted.decode(raw)
                if accepted.node_errors:
                    log.warning("ComfyUI dropped invalid branches of prompt %s: %s", prompt_id,
                                ", ".join(sorted(accepted.node_errors)))
                return accepted
            if status == 400:
                refused = _refused.decode(raw)
                raise ComfyValidationError(refused.error, refused.node_errors)
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
        raise ComfyProtocolError(f"ComfyUI answered {status} to POST /prompt")

    async def history(self, prompt_id: str) -> HistoryEntry | None:
        status, raw = await self._request("GET", f"/history/{prompt_id}")
        if status != 200:
            raise ComfyProtocolError(f"ComfyUI answered {status} to GET /history/{prompt_id}")
        return _history.decode(raw).get(prompt_id)

    async def history_when_written(
        self, prompt_id: str, attempts: int = 20, delay: float = 0.05
    ) -> HistoryEntry | None:
        """``/history/{id}`` for a prompt that just finished: ComfyUI writes it a moment after
        ``execution_success``, so retry briefly (about a second in all) before giving up."""
        for attempt in range(attempts):
            entry = await self.history(prompt_id)
            if entry is not None and entry.status is not None:
                return entry
            if attempt + 1 < attempts:
                await asyncio.sleep(delay)
        return None

    async def delete_history(self, prompt_ids: list[str]) -> None:
        await self._json("POST", "/history", {"delete": prompt_ids})

    async def queue(self) -> Queue:
        status, raw = await self._request("GET", "/queue")
        if status != 200:
            raise ComfyProtocolError(f"ComfyUI answered {status} to GET /queue")
        return _queue.decode(raw)

    async def delete_queued(self, prompt_ids: list[str]) -> None:
        """Remove prompts that wait in ComfyUI's queue (a running one is not affected: interrupt it)."""
        await self._json("POST", "/queue", {"delete": prompt_ids})

    async def interrupt(self, prompt_id: str) -> None:
        """Interrupt ``prompt_id`` if it is the one running; ComfyUI ignores it otherwise."""
        await self._json("POST", "/interrupt", {"prompt_id": prompt_id})

    async def upload_image(
        self, name: str, content: bytes, subfolder: str = "", overwrite: bool = True
    ) -> UploadedImage:
        form = aiohttp.FormData()
        form.add_field("image", content, filename=name, content_type="application/octet-stream")
        form.add_field("overwrite", "true" if overwrite else "false")
        if subfolder:
            form.add_field("subfolder", subfolder)
        status, raw = await self._request("POST", "/upload/image", data=form)
        if status != 200:
            raise ComfyProtocolError(f"ComfyUI answered {status} to POST /upload/image")
        return _uploaded.decode(raw)

    async def object_info(self) -> dict[str, Any]:
        info: dict[str, Any] = await self._json("GET", "/object_info")
        return info

    async def system_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self._json("GET", "/system_stats")
        return stats

    async def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        await self._json("POST", "/free", {"unload_models": unload_models, "free_memory": free_memory})

    async def view(self, filename: str, subfolder: str = "", type_: str = "output") -> AsyncIterator[bytes]:
        """Stream a file through GET /view (for a ComfyUI whose output folder is not on this machine)."""
        params = {"filename": filename, "subfolder": subfolder, "type": type_}
        try:
            async with self.session.get(self.base_url + "/view", params=params) as resp:
                if resp.status != 200:
                    raise ComfyProtocolError(f"ComfyUI answered {resp.status} to GET /view for {filename!r}")
                async for chunk in resp.content.iter_chunked(1 << 20):
                    yield chunk
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise ComfyUnreachable(f"ComfyUI at {self.base_url} is unreachable ({type(exc).__name__})") from None
