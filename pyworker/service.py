"""One /generate/sync job from a validated request to its answer: build the workflow, upload input images,
run it in ComfyUI (one job at a time), collect the outputs, upload them to S3, answer, call the webhook.

ComfyUI is released as soon as a job's execution ends: outputs are uploaded, and the webhook is called, while
the next job runs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import mimetypes
import time
import uuid
from collections.abc import Callable
from typing import Any, Final

import aiofiles
import aiohttp
import msgspec

from pyworker.comfy_ws import ComfyClient, Output, Phase, PromptResult, Update
from pyworker.errors import BadRequest, ComfyValidationError, WorkerError
from pyworker.images import load_image
from pyworker.logs import JobLog
from pyworker.messages import (
    Answer,
    FailedNode,
    GenerateInput,
    NodeInfo,
    OutputItem,
    Status,
    Timings,
    WebhookPayload,
)
from pyworker.modifiers import ImageInput, Modifiers
from pyworker.s3 import S3Uploader, UploadFailed
from pyworker.settings import S3Target, Settings
from pyworker.tasks import TaskSet, gather_all
from pyworker.webhook import WebhookSender

log = logging.getLogger(__name__)
_encoder: Final = msgspec.json.Encoder()
HTTP_STATUS: Final = {"completed": 200, "failed": 500, "cancelled": 500, "timeout": 504}


def check_api_workflow(workflow: dict[str, Any], path: str = "$.input.workflow_json") -> None:
    """A 400 for anything that is not ComfyUI's API format ``{"<id>": {"class_type", "inputs"}}``."""
    if "nodes" in workflow and "links" in workflow:
        raise BadRequest("this workflow is in ComfyUI's UI format; export it in API format "
                         "(ComfyUI: Workflow > Export (API)) and send that", path=path)
    if not workflow:
        raise BadRequest("the workflow is empty", path=path)
    for node_id, node in workflow.items():
        where = f"{path}[{_encoder.encode(node_id).decode()}]"
        if not isinstance(node, dict):
            raise BadRequest("each node must be an object with class_type and inputs (API format)", path=where)
        if not isinstance(node.get("class_type"), str) or not node["class_type"]:
            raise BadRequest("node has no class_type (is this API format?)", path=f"{where}.class_type")
        if not isinstance(node.get("inputs", {}), dict):
            raise BadRequest("node inputs must be an object", path=f"{where}.inputs")


class Worker:
    def __init__(self, settings: Settings, comfy: ComfyClient, modifiers: Modifiers, s3: S3Uploader,
                 webhooks: WebhookSender, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.comfy = comfy
        self.modifiers = modifiers
        self.s3 = s3
        self.webhooks = webhooks
        self.session = session
        # Pipelined (the default): up to two jobs in ComfyUI, one running and the next waiting in ComfyUI's own
        # queue, so that ComfyUI starts it the moment the current one ends; a job's slot is released when its
        # execution ends, and its outputs upload while the next one runs. Serial: one job at a time, from
        # submission to the end of its uploads.
        self.pipelined = settings.pipeline
        self._slots = asyncio.Semaphore(2 if self.pipelined else 1)  # FIFO
        self._tasks = TaskSet()  # jobs finishing (uploads, webhook) after their execution

    def prepare(self, inp: GenerateInput) -> tuple[dict[str, Any], list[ImageInput]]:
        """The workflow to submit and the images it needs, or a 400 naming the field."""
        if inp.workflow_json is not None and inp.modifier is not None:
            raise BadRequest("give either modifier (with modifications) or workflow_json, not both", path="$.input")
        if inp.workflow_json is not None:
            if inp.modifications is not None:
                raise BadRequest("modifications go with a modifier, not with workflow_json",
                                 path="$.input.modifications")
            check_api_workflow(inp.workflow_json)
            return inp.workflow_json, []
        if inp.modifier is None:
            raise BadRequest("give a modifier (with modifications) or a complete workflow_json", path="$.input")
        return self.modifiers.get(inp.modifier).apply(inp.modifications or {})

    def s3_target(self, inp: GenerateInput) -> S3Target | None:
        """The request's ``s3`` as a whole, else the environment's, else none (outputs stay on disk)."""
        if inp.s3 is not None:
            return S3Target(**msgspec.structs.asdict(inp.s3))
        return self.settings.s3

    async def generate(self, inp: GenerateInput, on_start: Callable[[], None] | None = None) -> tuple[int, Answer]:
        t0 = time.monotonic()
        request_id = inp.request_id or str(uuid.uuid4())
        workflow, image_inputs = self.prepare(inp)
        target = self.s3_target(inp)
        job = JobLog(request_id)
        job.event("accepted", mode=inp.modifier or "workflow_json")
        await self._upload_images(request_id, workflow, image_inputs, inp)
        t_pre = time.monotonic()

        status: Status = "completed"
        message, result = "", None
        await self._slots.acquire()
        slot = _Slot(self._slots)
        try:
            t_slot = time.monotonic()
            if on_start is not None:
                on_start()
            try:
                result = await self._run_with_timeout(workflow, job)
            except TimeoutError:
                status = "timeout"
                message = f"the job ran longer than {self.settings.job_timeout:.0f} s and was stopped"
            except ComfyValidationError as exc:
                exc.path = "$.input.modifier" if inp.modifier else "$.input.workflow_json"
                job.event("refused", message=exc.message.splitlines()[0])
                raise
        except BaseException:
            slot.release()
            raise
        if self.pipelined:
            slot.release()  # ComfyUI is free for the next job while this one's outputs upload
        if result is not None:
            status, message = self._outcome(result)
        job.event("executed", status=status, prompt_id=result.prompt_id if result else None,
                  comfy_start_ms=result.started_ms if result else None,
                  comfy_end_ms=result.ended_ms if result else None)
        # The job ran: its outputs are collected and its webhook sent even if the client goes away now.
        clock = _Clock(t0=t0, pre=t_pre, slot=t_slot, gen=time.monotonic())
        finish = self._tasks.spawn(self._finish(inp, request_id, job, result, status, message, target, clock,
                                                slot), name=f"finish-{request_id}")
        return await asyncio.shield(finish)

    async def _finish(self, inp: GenerateInput, request_id: str, job: JobLog, result: PromptResult | None,
                      status: Status, message: str, target: S3Target | None, clock: _Clock,
                      slot: _Slot) -> tuple[int, Answer]:
        try:
            output = await self._collect(request_id, result, target, inp.return_outputs_as_base64) if result else []
        finally:
            slot.release()
        failed_uploads = sum(1 for o in output if o.upload_error)
        if failed_uploads:
            message += f"; {failed_uploads} of {len(output)} outputs could not be uploaded (kept on disk)"
        t_end = time.monotonic()
        queue_s = (clock.slot - clock.pre) + (result.queued_s if result else 0.0)
        answer = Answer(
            id=request_id, status=status, message=message, output=output,
            timings=Timings(
                queue_ms=_ms(queue_s), preprocess_ms=_ms(clock.pre - clock.t0),
                generation_ms=_ms(result.execution_s if result else clock.gen - clock.slot),
                postprocess_ms=_ms(t_end - clock.gen), total_ms=_ms(t_end - clock.t0),
            ),
            nodes=[NodeInfo(node_id=n.node_id, class_type=n.class_type, ms=round(n.ms, 1), cached=n.cached)
                   for n in (result.nodes if result else [])],
            prompt_id=result.prompt_id if result else None,
            error=FailedNode(**msgspec.structs.asdict(result.failure)) if result and result.failure else None,
            warnings=result.warnings if result and result.warnings else None,
        )
        job.event("answered", status=status, outputs=len(output), total_ms=answer.timings.total_ms,
                  queue_ms=answer.timings.queue_ms, generation_ms=answer.timings.generation_ms,
                  postprocess_ms=answer.timings.postprocess_ms)
        self._webhook(inp, answer)
        return HTTP_STATUS[status], answer

    async def drain(self, grace: float) -> None:
        """At shutdown: let jobs whose execution ended finish their uploads (up to ``grace`` seconds)."""
        await self._tasks.drain(grace)

    async def _run_with_timeout(self, workflow: dict[str, Any], job: JobLog) -> PromptResult:
        """Run in ComfyUI; JOB_TIMEOUT counts from the start of execution, not from the wait in its queue."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(None) as deadline:

            def on_progress(update: Update) -> None:
                if update.phase is Phase.RUNNING and deadline.when() is None:
                    deadline.reschedule(loop.time() + self.settings.job_timeout)
                job(update)

            return await self.comfy.run(workflow, on_progress=on_progress)

    @staticmethod
    def _outcome(result: PromptResult) -> tuple[Status, str]:
        f = result.failure
        if result.phase is Phase.SUCCEEDED:
            return "completed", f"completed in {result.execution_s:.2f} s with {len(result.outputs)} outputs"
        if result.phase is Phase.INTERRUPTED:
            return "cancelled", "the prompt was interrupted in ComfyUI"
        assert f is not None
        return "failed", f"node {f.node_id} ({f.node_type}) failed: {f.exception_type}: {f.exception_message}"

    async def _upload_images(self, request_id: str, workflow: dict[str, Any], from_params: list[ImageInput],
                             inp: GenerateInput) -> None:
        """Fetch or decode each input image and upload it into a folder of this request's own in ComfyUI's
        input folder (concurrent requests may use the same names), then point the workflow at it."""
        for i, img in enumerate(inp.images):
            if (img.url is None) == (img.base64 is None):
                raise BadRequest("give exactly one of url or base64", path=f"$.input.images[{i}]")
        named = {img.name: "" for img in inp.images}  # the name in the workflow -> the uploaded reference
        jobs: list[tuple[str, str, str, ImageInput | None]] = [
            (img.name, img.url or img.base64 or "", f"$.input.images[{i}]", None) for i, img in enumerate(inp.images)
        ]
        jobs += [(f"{p.input}_{p.node_id}.png", p.source, p.path, p) for p in from_params]
        folder = f"pyworker/{request_id}"

        async def one(name: str, source: str, path: str, param: ImageInput | None) -> None:
            data = await load_image(
                source, path=path, session=self.session, max_bytes=self.settings.image_max_bytes,
                timeout=self.settings.image_fetch_timeout, allow_private=self.settings.allow_private_image_urls,
            )
            uploaded = await self.comfy.api.upload_image(name, data, subfolder=folder)
            ref = f"{uploaded.subfolder}/{uploaded.name}" if uploaded.subfolder else uploaded.name
            if param is not None:
                workflow[param.node_id]["inputs"][param.input] = ref
            else:
                named[name] = ref

        if not jobs:
            return
        await gather_all(one(*job) for job in jobs)
        for node in workflow.values():  # every input that names an uploaded image now names its upload
            inputs = node.get("inputs", {})
            for key, value in inputs.items():
                if isinstance(value, str) and value in named:
                    inputs[key] = named[value]

    async def _collect(self, request_id: str, result: PromptResult, target: S3Target | None,
                       inline: bool) -> list[OutputItem]:
        """Every output as an answer item. Nothing here fails the job: an output that can't be read or uploaded
        carries ``upload_error`` (and keeps ``local_path`` when it is on disk)."""
        dest = self.settings.worker_data_dir / request_id
        limit = asyncio.Semaphore(4)

        async def one(out: Output, client: Any) -> OutputItem:
            if out.text is not None:
                return OutputItem(filename=None, subfolder="", type=out.type, node_id=out.node_id,
                                  output_type=out.output_type, mimetype="text/plain", text=out.text)
            assert out.filename is not None
            mimetype = mimetypes.guess_type(out.filename)[0] or "application/octet-stream"
            item = OutputItem(filename=out.filename, subfolder=out.subfolder, type=out.type, node_id=out.node_id,
                              output_type=out.output_type, mimetype=mimetype)
            async with limit:
                try:
                    path = await self.comfy.fetch_output(out, dest)
                except (WorkerError, OSError) as exc:
                    item.upload_error = f"the output could not be read from ComfyUI ({type(exc).__name__})"
                    return item
                item.local_path = str(path)
                if client is not None and target is not None:
                    key = self.settings.s3_key_prefix + "/".join(p for p in (request_id, out.subfolder,
                                                                             out.filename) if p)
                    try:
                        item.url = await self.s3.upload(client, target, path, key, mimetype)
                        item.s3_key = key
                    except UploadFailed as exc:
                        item.upload_error = str(exc)
                    except (OSError, ValueError) as exc:
                        item.upload_error = f"the upload failed ({type(exc).__name__})"
                if inline:
                    try:
                        async with aiofiles.open(path, "rb") as f:
                            raw = await f.read()
                        item.data = await asyncio.to_thread(_b64, raw)
                    except OSError as exc:
                        item.upload_error = f"the output could not be read for inlining ({type(exc).__name__})"
            return item

        async with contextlib.AsyncExitStack() as stack:
            client, s3_error = None, None
            if target is not None and any(o.filename for o in result.outputs):
                try:
                    client = await stack.enter_async_context(self.s3.client_for(target))
                except Exception as exc:  # botocore refuses a bad endpoint or region when the client is made
                    s3_error = f"S3 is not usable with this configuration ({type(exc).__name__})"
            items = await gather_all(one(o, client) for o in result.outputs)
        if s3_error:
            for item in items:
                if item.filename and not item.upload_error:
                    item.upload_error = s3_error
        return items

    def _webhook(self, inp: GenerateInput, answer: Answer) -> None:
        hook = inp.webhook
        url = (hook.url if hook else None) or self.settings.webhook_url
        if not url:
            return
        fields = msgspec.structs.asdict(answer)
        fields["output"] = [msgspec.structs.replace(o, data=None) for o in answer.output]  # URLs, not inline files
        payload = WebhookPayload(**fields, extra=hook.extra_params if hook else {})
        self.webhooks.send(
            url, _encoder.encode(payload),
            # The operator's secret signs deliveries to the operator's URL only, never to a client's own URL.
            secret=(hook.secret if hook else None)
            or (self.settings.webhook_secret if url == self.settings.webhook_url else None),
            timeout=(hook.timeout if hook else None) or self.settings.webhook_timeout,
            request_id=answer.id,
        )


class _Slot:
    """One held slot of the semaphore, released exactly once."""

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self._semaphore: asyncio.Semaphore | None = semaphore

    def release(self) -> None:
        if self._semaphore is not None:
            self._semaphore.release()
            self._semaphore = None


class _Clock(msgspec.Struct, frozen=True):
    t0: float  # the request arrived
    pre: float  # its workflow and input images were ready
    slot: float  # it got its slot in ComfyUI
    gen: float  # its execution ended


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
