"""The aiohttp service: app factory, typed app state, one error middleware, the routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import aiohttp
import msgspec
from aiohttp import web

from pyworker.comfy_ws import ComfyClient
from pyworker.embedded import MISC, EmbeddedComfyUI, ensure_demo_checkpoint
from pyworker.errors import WorkerError
from pyworker.http.decode import decode_request
from pyworker.modifiers import Modifiers
from pyworker.s3 import S3Uploader
from pyworker.service import Worker
from pyworker.settings import Settings
from pyworker.webhook import WebhookSender

log = logging.getLogger(__name__)

SETTINGS: Final = web.AppKey("settings", Settings)
WORKER: Final = web.AppKey("worker", Worker)
COMFY: Final = web.AppKey("comfy", ComfyClient)
WEBHOOKS: Final = web.AppKey("webhooks", WebhookSender)

SD15_DEFAULT_NAME = "v1-5-pruned-emaonly.safetensors"
_encoder: Final = msgspec.json.Encoder()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=_encoder.encode(body), status=status, content_type="application/json", headers=headers)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every known error becomes its status and JSON body; anything else a bare 500 (logged on one line)."""
    try:
        return await handler(request)
    except WorkerError as exc:
        if exc.status >= 500:
            log.warning("%s %s: %s", request.method, request.path, exc.message)
        return _json(exc.body(), exc.status)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_body_bytes
        return _json({"error": f"the body is larger than the limit of {limit} bytes"}, 413)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _json({"error": exc.reason}, exc.status, headers=dict(exc.headers))
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return _json({"error": "internal error"}, 500)


async def generate_sync(request: web.Request) -> web.Response:
    body = await request.read()
    req = decode_request(body)
    status, answer = await request.app[WORKER].generate(req.input)
    return _json(answer, status)


async def health(request: web.Request) -> web.Response:
    comfy = request.app[COMFY]
    return _json({"comfyui_connected": comfy.connected, "comfyui_queue": comfy.queue_remaining})


async def _default_checkpoint(settings: Settings, embedded: EmbeddedComfyUI | None) -> str | None:
    if settings.default_checkpoint or embedded is None:
        return settings.default_checkpoint
    if (embedded.checkpoints_dir / SD15_DEFAULT_NAME).exists():
        return None
    name = await ensure_demo_checkpoint(embedded.home, embedded.checkpoints_dir)
    log.warning("no SD1.5 checkpoint (%s) in %s: using the generated %s. IT HAS RANDOM WEIGHTS: every image "
                "is noise. Put a real checkpoint there (or set DEFAULT_CHECKPOINT) for real images.",
                SD15_DEFAULT_NAME, embedded.checkpoints_dir, name)
    return name


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        embedded: EmbeddedComfyUI | None = None
        url, output_dir = settings.comfyui_url, settings.comfyui_output_dir
        if url is None:
            embedded = await stack.enter_async_context(EmbeddedComfyUI(home=settings.comfyui_home))
            url, output_dir = embedded.url, embedded.output_dir
        checkpoint = await _default_checkpoint(settings, embedded)
        folders = [MISC / "modifiers"] + ([settings.modifiers_dir] if settings.modifiers_dir else [])
        modifiers = await asyncio.to_thread(Modifiers.load, folders, settings.default_workflow, checkpoint)
        comfy = await stack.enter_async_context(ComfyClient(url, output_dir=output_dir, session=session))
        s3 = await stack.enter_async_context(S3Uploader(default=settings.s3, url_expiry=settings.s3_url_expiry))
        webhooks = WebhookSender(session)
        stack.push_async_callback(webhooks.drain, 10.0)
        app[COMFY] = comfy
        app[WEBHOOKS] = webhooks
        app[WORKER] = Worker(settings, comfy, modifiers, s3, webhooks, session)
        log.info("serving ComfyUI at %s; modifiers: %s", url, ", ".join(sorted(modifiers.by_name)))
        yield


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[errors])
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_resources)
    app.router.add_post("/generate/sync", generate_sync)
    app.router.add_get("/health", health)
    return app

