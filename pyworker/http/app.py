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

from pyworker import __version__
from pyworker.admission import Ledger
from pyworker.autoscaler.auth import Unauthorized, Verifier
from pyworker.autoscaler.reports import Reporter
from pyworker.benchmark import Benchmark, BenchmarkConfig, Report, load_reference
from pyworker.comfy_ws import ComfyClient
from pyworker.embedded import MISC, EmbeddedComfyUI, default_checkpoint
from pyworker.errors import WorkerError
from pyworker.http.decode import decode_body
from pyworker.modifiers import Modifiers
from pyworker.readiness import Readiness, supervise
from pyworker.s3 import S3Uploader
from pyworker.service import Worker
from pyworker.settings import Settings
from pyworker.webhook import WebhookSender

log = logging.getLogger(__name__)

SETTINGS: Final = web.AppKey("settings", Settings)
WORKER: Final = web.AppKey("worker", Worker)
COMFY: Final = web.AppKey("comfy", ComfyClient)
LEDGER: Final = web.AppKey("ledger", Ledger)
READINESS: Final = web.AppKey("readiness", Readiness)
VERIFIER: Final = web.AppKey("verifier", Verifier)
EMBEDDED: Final = web.AppKey[EmbeddedComfyUI | None]("embedded")

_encoder: Final = msgspec.json.Encoder()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NotReady(WorkerError):
    status = 503

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


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
        return _json(exc.body(), exc.status, exc.headers())
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
    app = request.app
    settings = app[SETTINGS]
    envelope = decode_body(await request.read())
    auth = envelope.auth
    if settings.behind_autoscaler and not settings.unsecured:
        if auth is None:
            log.warning("request refused: no auth_data, and an autoscaler is configured (UNSECURED is not set)")
            raise Unauthorized()
        app[VERIFIER].verify(auth)
    readiness = app[READINESS]
    if not readiness.ready:
        raise NotReady(f"not ready: {readiness.why_not_ready()}")
    ticket = app[LEDGER].admit(auth.cost if auth else settings.request_cost,
                               auth.request_idx if auth else None)
    try:
        status, answer = await app[WORKER].generate(envelope.request.input, on_start=ticket.start)
    except asyncio.CancelledError:
        ticket.finish("Cancelled")
        log.warning("request %s: the client went away (499); its prompt was stopped",
                    envelope.request.input.request_id or (auth.request_idx if auth else "-"))
        raise
    except BaseException:
        ticket.finish("Error")
        raise
    ticket.finish("Success" if status == 200 else "Error")
    return _json(answer, status)


async def health(request: web.Request) -> web.Response:
    readiness, ledger = request.app[READINESS], request.app[LEDGER]
    body = {"ready": readiness.ready, "loadtime": round(readiness.loadtime, 3), "error_msg": readiness.error_msg,
            "comfyui_connected": request.app[COMFY].connected, "counters": msgspec.structs.asdict(ledger.counters),
            "cur_load": ledger.cur_load, "max_perf": ledger.max_perf}
    return _json(body, 200 if readiness.ready else 503)


async def benchmark_report(request: web.Request) -> web.Response:
    readiness = request.app[READINESS]
    if readiness.report is None:
        return _json({"error": readiness.benchmark_error or "no benchmark report yet"}, 404)
    return _json(readiness.report)


async def _start_embedded(stack: contextlib.AsyncExitStack, settings: Settings) -> EmbeddedComfyUI:
    embedded = EmbeddedComfyUI(home=settings.comfyui_home, base=settings.comfyui_base_dir)
    await embedded.start()
    stack.push_async_callback(embedded.stop)
    return embedded


async def _resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        embedded = await _start_embedded(stack, settings) if settings.comfyui_url is None else None
        url = embedded.url if embedded else str(settings.comfyui_url)
        output_dir = embedded.output_dir if embedded else settings.comfyui_output_dir
        checkpoint = await default_checkpoint(settings.default_checkpoint, embedded)
        folders = [MISC / "modifiers"] + ([settings.modifiers_dir] if settings.modifiers_dir else [])
        modifiers = await asyncio.to_thread(Modifiers.load, folders, settings.default_workflow, checkpoint)
        comfy = await stack.enter_async_context(ComfyClient(url, output_dir=output_dir, session=session))
        s3 = await stack.enter_async_context(S3Uploader(default=settings.s3, url_expiry=settings.s3_url_expiry))
        webhooks = WebhookSender(session)
        stack.push_async_callback(webhooks.drain, 10.0)

        ledger = Ledger(max_queue_time=settings.max_queue_time)
        verifier = Verifier(replay_window=settings.replay_window)
        if settings.autoscaler_pubkey:
            verifier.key = Verifier.load_key(await asyncio.to_thread(settings.autoscaler_pubkey.read_bytes))
        needs_key = settings.behind_autoscaler and not settings.unsecured and verifier.key is None
        readiness = Readiness(needs_benchmark=settings.run_benchmark, needs_key=needs_key,
                              refuse_slow=settings.benchmark_screening == "refuse", on_change=ledger.changed.set)
        app[COMFY] = comfy
        app[LEDGER] = ledger
        app[READINESS] = readiness
        app[VERIFIER] = verifier
        app[EMBEDDED] = embedded
        worker = Worker(settings, comfy, modifiers, s3, webhooks, session)
        stack.push_async_callback(worker.drain, 30.0)  # runs before the webhooks drain and S3 closes
        app[WORKER] = worker

        benchmark = None
        if settings.run_benchmark:
            data = settings.worker_data_dir
            benchmark = Benchmark(
                comfy, BenchmarkConfig(
                    width=settings.benchmark_test_width, height=settings.benchmark_test_height,
                    steps=settings.benchmark_test_steps, runs=settings.benchmark_runs,
                    workflow=settings.benchmark_workflow, checkpoint=checkpoint, cost_per_job=settings.request_cost),
                reference=await asyncio.to_thread(load_reference, settings.gpu_reference),
                checkpoints_dir=embedded.checkpoints_dir if embedded else None,
                cache_path=settings.benchmark_cache or data / "benchmark-cache.json",
                report_path=settings.benchmark_report or data / "benchmark.json",
            )

        def on_report(report: Report) -> None:
            ledger.max_perf = report.max_perf

        tasks: list[asyncio.Task[None]] = [asyncio.create_task(
            supervise(readiness, comfy, embedded, benchmark, on_report), name="supervisor")]
        reporter = None
        if settings.behind_autoscaler:
            reporter = Reporter(
                session, ledger, addresses=settings.report_addr,
                worker_id=int(settings.container_id) if settings.container_id.isdigit() else settings.container_id,
                mtoken=settings.master_token, version=__version__, url=settings.public_url,
                state=lambda: (readiness.loadtime, readiness.error_msg),
            )
            tasks.append(asyncio.create_task(reporter.run(), name="reporter"))
            if needs_key:
                tasks.append(asyncio.create_task(_fetch_key(verifier, session, settings, readiness), name="pubkey"))
        log.info("serving ComfyUI at %s; modifiers: %s", url, ", ".join(sorted(modifiers.by_name)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def _fetch_key(verifier: Verifier, session: aiohttp.ClientSession, settings: Settings,
                     readiness: Readiness) -> None:
    """Until it is fetched the worker is not ready, and says why in error_msg."""
    while verifier.key is None:
        try:
            await verifier.fetch_key(session, settings.report_addr)
        except ConnectionError as exc:
            log.error("%s; not ready until it is fetched", exc)
            readiness.set_key(False, f"{exc}; signed requests can't be checked")
    readiness.set_key(True)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[errors])
    app[SETTINGS] = settings
    app.cleanup_ctx.append(_resources)
    app.router.add_post("/generate/sync", generate_sync)
    app.router.add_get("/health", health)
    app.router.add_get("/benchmark", benchmark_report)
    return app
