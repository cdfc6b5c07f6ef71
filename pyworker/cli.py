"""Command line: ``python -m pyworker <command>``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import ssl
import sys
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, NoReturn

import msgspec

from pyworker import __version__
from pyworker.comfy_ws import ComfyClient, Phase, PromptResult, Update
from pyworker.embedded import DEFAULT_HOME, EmbeddedComfyUI, default_checkpoint, ensure_demo_checkpoint
from pyworker.errors import WorkerError
from pyworker.logs import configure
from pyworker.settings import Settings, SettingsError, from_env

log = logging.getLogger("pyworker")


class ProgressPrinter:
    """Prints a prompt's progress: node, step/max, it/s; at most ``per_second`` lines a second per node."""

    def __init__(self, per_second: float = 4.0) -> None:
        self.min_gap = 1.0 / per_second
        self.last = 0.0
        self.started = time.monotonic()

    def __call__(self, u: Update) -> None:
        now = time.monotonic()
        if u.phase is Phase.RUNNING and u.value is not None:
            final = u.value == u.max
            if not final and now - self.last < self.min_gap:
                return
            rate = f"  {u.it_s:.2f} it/s" if u.it_s else ""
            line = f"node {u.node} {u.class_type or ''}  step {u.value}/{u.max}{rate}"
        elif u.phase is Phase.RUNNING and u.node is not None:
            line = f"node {u.node} {u.class_type or ''}"
        else:
            line = u.phase.value
        self.last = now
        print(f"[{now - self.started:7.2f}s] {line}", flush=True)


@contextlib.asynccontextmanager
async def comfy_at(url: str | None, settings: Settings | None = None
                   ) -> AsyncIterator[tuple[str, Path | None, EmbeddedComfyUI | None]]:
    """The given ComfyUI, or an embedded one started (and stopped) here."""
    if url:
        yield url, settings.comfyui_output_dir if settings else None, None
        return
    home = settings.comfyui_home if settings else DEFAULT_HOME
    async with EmbeddedComfyUI(home=home, base=settings.comfyui_base_dir if settings else None) as comfy:
        yield comfy.url, comfy.output_dir, comfy


def _set_inputs(workflow: dict[str, Any], class_type: str, **values: object) -> None:
    """Set inputs on every node of a class (a command-line convenience; the service has modifiers)."""
    for node in workflow.values():
        if isinstance(node, dict) and node.get("class_type") == class_type:
            node.setdefault("inputs", {}).update({k: v for k, v in values.items() if v is not None})


async def run_workflow(args: argparse.Namespace, workflow: dict[str, Any]) -> int:
    async with comfy_at(args.comfy_url) as (url, output_dir, embedded):
        if args.demo_checkpoint:
            if embedded is None:
                print("error: --demo-checkpoint needs the embedded ComfyUI (no --comfy-url)", file=sys.stderr)
                return 2
            name = await ensure_demo_checkpoint(embedded.home, embedded.checkpoints_dir)
            _set_inputs(workflow, "CheckpointLoaderSimple", ckpt_name=name)
            print(f"using {name}: RANDOM WEIGHTS, the image will be noise (a demo of the pipeline, not a model)")
        _set_inputs(workflow, "EmptyLatentImage", width=args.width, height=args.height)
        _set_inputs(workflow, "KSampler", steps=args.steps)
        async with ComfyClient(url, output_dir=output_dir) as comfy:
            result = await comfy.run(workflow, on_progress=ProgressPrinter())
            print_result(result, comfy)
            return 0 if result.succeeded else 1


def print_result(result: PromptResult, comfy: ComfyClient) -> None:
    print(f"prompt {result.prompt_id}: {result.phase.value} in {result.execution_s:.2f} s "
          f"(queued {result.queued_s * 1000:.0f} ms)")
    for node in result.nodes:
        print(f"  node {node.node_id:>4} {node.class_type:<24} {'cached' if node.cached else f'{node.ms:8.1f} ms'}")
    if result.failure:
        f = result.failure
        print(f"  failed at node {f.node_id} ({f.node_type}): {f.exception_type}: {f.exception_message}")
    for out in result.outputs:
        if out.text is not None:
            print(f"  output {out.output_type} (node {out.node_id}): {out.text}")
        elif comfy.output_dir is not None and out.type == "output":
            print(f"  output {out.output_type} (node {out.node_id}): {comfy.local_path(out)}")
        else:
            print(f"  output {out.output_type} (node {out.node_id}): {out.subfolder}/{out.filename} ({out.type})")


def serve(args: argparse.Namespace) -> None:
    from aiohttp import web

    from pyworker.http.app import create_app

    settings = _settings(worker_port=args.port, comfyui_url=args.comfy_url)
    configure(settings.log_format, logging.DEBUG if args.verbose else logging.INFO)
    tls = None
    if settings.use_ssl:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(settings.ssl_cert, settings.ssl_key)
        except (OSError, ssl.SSLError) as exc:
            _die(f"USE_SSL: cannot load {settings.ssl_cert} / {settings.ssl_key}: {exc}", 2)
    log.info("pyworker %s listening on %s://%s:%d", __version__, "https" if tls else "http", args.host,
             settings.worker_port)
    web.run_app(create_app(settings), host=args.host, port=settings.worker_port, print=None, access_log=None,
                handler_cancellation=True, ssl_context=tls,
                shutdown_timeout=15)


async def bench(args: argparse.Namespace, settings: Settings) -> int:
    """The start-up benchmark alone: progress, the operator's summary, the report's path."""
    from pyworker.benchmark import Benchmark, BenchmarkConfig, load_reference, summary

    async with comfy_at(settings.comfyui_url, settings) as (url, output_dir, embedded):
        checkpoint = await default_checkpoint(settings.default_checkpoint, embedded)
        report_path = settings.benchmark_report or settings.worker_data_dir / "benchmark.json"
        async with ComfyClient(url, output_dir=output_dir) as comfy:
            runner = Benchmark(
                comfy, BenchmarkConfig(width=settings.benchmark_test_width, height=settings.benchmark_test_height,
                                       steps=settings.benchmark_test_steps, runs=settings.benchmark_runs,
                                       workflow=settings.benchmark_workflow, checkpoint=checkpoint,
                                       cost_per_job=settings.request_cost),
                reference=load_reference(settings.gpu_reference),
                checkpoints_dir=embedded.checkpoints_dir if embedded else None,
                cache_path=None if args.fresh else settings.benchmark_cache or
                settings.worker_data_dir / "benchmark-cache.json",
                report_path=report_path,
            )
            report = await runner.run(on_progress=ProgressPrinter(per_second=2))
    print(summary(report))
    print(f"report: {report_path}")
    return 1 if report.verdict == "slow" else 0


async def client(args: argparse.Namespace) -> int:
    import aiohttp

    from pyworker.remote import WorkerClient, build_payload, save_outputs

    s3 = None
    if args.s3_bucket:
        s3 = {"access_key_id": args.s3_access_key_id, "secret_access_key": args.s3_secret_access_key,
              "bucket_name": args.s3_bucket, **({"endpoint_url": args.s3_endpoint_url} if args.s3_endpoint_url else {}),
              **({"region": args.s3_region} if args.s3_region else {})}
    payload = build_payload(prompt=args.prompt, workflow=Path(args.workflow) if args.workflow else None,
                            width=args.width, height=args.height, steps=args.steps, seed=args.seed, s3=s3,
                            base64_outputs=args.base64)
    async with aiohttp.ClientSession() as session:
        remote = WorkerClient(session, worker_url=args.url, route_url=args.route_url, endpoint=args.endpoint,
                              api_key=args.api_key)
        if args.command == "load":
            from pyworker.remote import load

            def fresh() -> dict[str, Any]:
                body = msgspec.json.decode(msgspec.json.encode(payload))
                mods = body["input"].get("modifications")
                if mods is not None and args.seed is None:
                    mods["seed"] = random.randint(0, 2**32 - 1)  # unique: ComfyUI's cache must not serve it
                return body  # type: ignore[no-any-return]

            result = await load(remote, fresh, args.n, args.rps)
            print(result.summary())
            return 0 if result.ok == result.sent else 1
        started = time.monotonic()
        status, answer = await remote.send(payload)
        print(f"HTTP {status} in {time.monotonic() - started:.2f} s: {answer.get('status', '')} "
              f"{answer.get('message') or answer.get('error', '')}")
        if status == 200:
            for path in await save_outputs(session, answer, Path(args.out)):
                print(f"  saved {path}")
        print(f"  timings {answer.get('timings', {})}")
        return 0 if status == 200 else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pyworker")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    sv = sub.add_parser("serve", help="serve POST /generate/sync (settings from the environment, see README)")
    sv.add_argument("--port", type=int, help="overrides WORKER_PORT (default 3000)")
    sv.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    sv.add_argument("--comfy-url", help="overrides COMFYUI_URL; unset: start the embedded ComfyUI")
    bn = sub.add_parser("bench", help="run the start-up benchmark alone and print its report (BENCHMARK_* settings)")
    bn.add_argument("--comfy-url", help="overrides COMFYUI_URL; unset: start the embedded ComfyUI")
    bn.add_argument("--fresh", action="store_true", help="ignore the cached result")
    for name, text in (("client", "send one request to a worker and save its outputs"),
                       ("load", "load-test a worker: N requests at R per second, then latency percentiles")):
        cl = sub.add_parser(name, help=text)
        to = cl.add_mutually_exclusive_group(required=True)
        to.add_argument("--url", help="the worker, e.g. http://127.0.0.1:3000")
        to.add_argument("--route-url", help="an autoscaler's route URL (e.g. https://run.vast.ai/route/)")
        cl.add_argument("--endpoint", default="", help="the autoscaler endpoint's name (with --route-url)")
        cl.add_argument("--api-key", default="", help="the autoscaler API key (with --route-url)")
        cl.add_argument("--prompt", default="a cat sitting on a windowsill")
        cl.add_argument("--workflow", help="an API-format workflow file instead of Text2Image")
        cl.add_argument("--width", type=int)
        cl.add_argument("--height", type=int)
        cl.add_argument("--steps", type=int)
        cl.add_argument("--seed", type=int)
        cl.add_argument("--s3-bucket")
        cl.add_argument("--s3-access-key-id")
        cl.add_argument("--s3-secret-access-key")
        cl.add_argument("--s3-endpoint-url")
        cl.add_argument("--s3-region")
        cl.add_argument("--base64", action="store_true", help="ask for the outputs inline")
        cl.add_argument("--out", default="outputs", help="where the client saves outputs (default ./outputs)")
        if name == "load":
            cl.add_argument("-n", type=int, default=20, help="number of requests")
            cl.add_argument("--rps", type=float, default=1.0, help="requests started per second")
    rw = sub.add_parser("run-workflow", help="run one API-format workflow and print progress and outputs")
    rw.add_argument("file", help="a workflow in ComfyUI's API format (File > Export (API))")
    rw.add_argument("--comfy-url", help="a running ComfyUI; without it an embedded one is started and stopped")
    rw.add_argument("--demo-checkpoint", action="store_true",
                    help="generate the random-weight SD1.5 checkpoint and use it (outputs are noise)")
    rw.add_argument("--width", type=int, help="set every EmptyLatentImage's width")
    rw.add_argument("--height", type=int, help="set every EmptyLatentImage's height")
    rw.add_argument("--steps", type=int, help="set every KSampler's steps")
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args)
        return
    configure("text", logging.DEBUG if args.verbose else logging.INFO)
    if args.command in ("client", "load"):
        _run(client(args), error_code=1)
    if args.command == "bench":
        _run(bench(args, _settings(comfyui_url=args.comfy_url)), error_code=2)
    try:
        workflow = msgspec.json.decode(Path(args.file).read_bytes(), type=dict[str, Any])
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        _die(f"cannot read an API-format workflow from {args.file}: {exc}", 2)
    _run(run_workflow(args, workflow), error_code=1)


def _die(message: str, code: int) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _settings(**overrides: object) -> Settings:
    try:
        return from_env(None, **overrides)
    except SettingsError as exc:
        _die(str(exc), 2)


def _run(main: Coroutine[Any, Any, int], error_code: int) -> NoReturn:
    try:
        sys.exit(asyncio.run(main))
    except WorkerError as exc:
        _die(exc.message, error_code)
    except KeyboardInterrupt:
        sys.exit(130)
