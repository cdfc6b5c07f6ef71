"""Command line: ``python -m pyworker <command>``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec

from pyworker import __version__
from pyworker.comfy_ws import ComfyClient, Phase, PromptResult, Update
from pyworker.embedded import EmbeddedComfyUI, ensure_demo_checkpoint
from pyworker.errors import WorkerError
from pyworker.logs import configure

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
async def comfy_at(url: str | None) -> AsyncIterator[tuple[str, Path | None, EmbeddedComfyUI | None]]:
    """The given ComfyUI, or an embedded one started (and stopped) here."""
    if url:
        yield url, None, None
        return
    async with EmbeddedComfyUI() as comfy:
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
    from pyworker.settings import SettingsError, from_env

    try:
        settings = from_env(worker_port=args.port, comfyui_url=args.comfy_url)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    configure(settings.log_format, logging.DEBUG if args.verbose else logging.INFO)
    log.info("pyworker %s listening on %s:%d", __version__, args.host, settings.worker_port)
    web.run_app(create_app(settings), host=args.host, port=settings.worker_port, print=None, access_log=None,
                shutdown_timeout=15)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pyworker")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    sv = sub.add_parser("serve", help="serve POST /generate/sync (settings from the environment, see README)")
    sv.add_argument("--port", type=int, help="overrides WORKER_PORT (default 3000)")
    sv.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    sv.add_argument("--comfy-url", help="overrides COMFYUI_URL; unset: start the embedded ComfyUI")
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
    try:
        workflow = msgspec.json.decode(Path(args.file).read_bytes(), type=dict[str, Any])
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        print(f"error: cannot read an API-format workflow from {args.file}: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(asyncio.run(run_workflow(args, workflow)))
    except WorkerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
