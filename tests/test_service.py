"""POST /generate/sync end to end: the real ComfyUI, a real S3 server (SeaweedFS), a real webhook receiver.

The SD1.5 graphs run on the random-weight checkpoint: their images are noise. The seed's examples are sent as
written except for width/height/steps, lowered so a 2-core CPU runs them in seconds."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from pyworker.comfy_ws import ComfyClient
from pyworker.embedded import EmbeddedComfyUI, free_port
from pyworker.webhook import SIGNATURE_HEADER
from tests.conftest import WorkerFactory, outputs_graph, steps_graph
from tests.doubles import TcpProxy
from tests.servers import SeaweedFS, webhook_receiver

Client = TestClient[web.Request, web.Application]
SMALL = {"width": 64, "height": 64, "steps": 3}


async def post(client: Client, body: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/generate/sync", data=json.dumps(body) if not isinstance(body, bytes) else body)
    return resp.status, await resp.json()


def sd15_completed_from_seed_example(ckpt: str) -> dict[str, Any]:
    """The seed's custom-workflow example (its KSampler node as written) completed into a runnable graph."""
    wf: dict[str, Any] = {
        "3": {"inputs": {"seed": 42, "steps": 20, "cfg": 8, "sampler_name": "euler", "scheduler": "normal",
                         "denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                         "latent_image": ["5", 0]}, "class_type": "KSampler"},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "seed_custom", "images": ["8", 0]}},
    }
    wf["3"]["inputs"]["steps"] = 3
    return wf


def assert_answer_shape(answer: dict[str, Any]) -> None:
    assert set(answer) >= {"id", "status", "message", "output", "timings", "nodes", "prompt_id"}
    assert set(answer["timings"]) == {"queue_ms", "preprocess_ms", "generation_ms", "postprocess_ms", "total_ms"}
    for item in answer["output"]:
        assert {"filename", "subfolder", "type", "node_id", "output_type", "mimetype"} <= set(item)
    for node in answer["nodes"]:
        assert set(node) == {"node_id", "class_type", "ms", "cached"}


# -- the seed's three examples -----------------------------------------------------------------------------------

async def test_seed_example_text2image(make_worker: WorkerFactory, demo_checkpoint: str) -> None:
    worker = await make_worker(default_checkpoint=demo_checkpoint)
    body = {"input": {"modifier": "Text2Image", "modifications": {
        "prompt": "a cat sitting on a windowsill", "width": 512, "height": 512, "steps": 20, "seed": 42, **SMALL}}}
    status, answer = await post(worker, body)
    assert status == 200, answer
    assert_answer_shape(answer)
    assert answer["status"] == "completed"
    uuid.UUID(answer["id"])  # generated when absent
    (image,) = answer["output"]
    assert image["output_type"] == "images" and image["mimetype"] == "image/png" and image["node_id"] == "9"
    assert Path(image["local_path"]).read_bytes()[:4] == b"\x89PNG"
    assert "url" not in image  # no S3 configured: the file stays on disk
    assert [n["class_type"] for n in answer["nodes"]][-1] == "SaveImage"
    t = answer["timings"]
    assert t["total_ms"] >= t["generation_ms"] > 0


async def test_seed_example_rawworkflow(make_worker: WorkerFactory, demo_checkpoint: str) -> None:
    worker = await make_worker(default_checkpoint=demo_checkpoint)
    body = {"input": {"request_id": str(uuid.uuid4()), "modifier": "RawWorkflow", "modifications": {
        "prompt": "a beautiful landscape", "width": 1024, "height": 1024, "steps": 20, "seed": 123456789, **SMALL}}}
    status, answer = await post(worker, body)
    assert status == 200, answer
    assert answer["id"] == body["input"]["request_id"]
    assert answer["status"] == "completed" and len(answer["output"]) == 1


async def test_seed_example_custom_workflow(worker: Client, demo_checkpoint: str) -> None:
    body = {"input": {"request_id": "67890", "workflow_json": sd15_completed_from_seed_example(demo_checkpoint)}}
    status, answer = await post(worker, body)
    assert status == 200, answer
    assert answer["id"] == "67890"
    assert answer["output"][0]["filename"].startswith("seed_custom")


# -- outputs -----------------------------------------------------------------------------------------------------

async def test_every_output_kind_inline_as_base64(worker: Client) -> None:
    status, answer = await post(worker, {"input": {"workflow_json": outputs_graph(), "return_outputs_as_base64": True}})
    assert status == 200, answer
    kinds = {o["output_type"]: o for o in answer["output"]}
    assert sorted(kinds) == ["audio", "files", "gifs", "images", "text"]
    assert kinds["text"]["text"].startswith("outputs for seed") and kinds["text"]["mimetype"] == "text/plain"
    assert kinds["audio"]["mimetype"] in ("audio/x-wav", "audio/wav")
    for kind in ("audio", "files", "gifs", "images"):
        item = kinds[kind]
        assert base64.b64decode(item["data"]) == Path(item["local_path"]).read_bytes()


async def test_s3_from_the_request_and_presigned_url_serves_the_bytes(worker: Client, seaweed: SeaweedFS) -> None:
    s3 = msgspec.structs.asdict(seaweed.target())
    rid = f"s3req-{uuid.uuid4().hex[:8]}"
    status, answer = await post(worker, {"input": {"request_id": rid, "workflow_json": outputs_graph(file_mb=17.5),
                                                   "s3": s3}})
    assert status == 200, answer
    files = [o for o in answer["output"] if o.get("filename")]
    assert len(files) == 4
    async with aiohttp.ClientSession() as http:
        for item in files:
            assert item["s3_key"] == "/".join(p for p in (rid, item["subfolder"], item["filename"]) if p)
            assert "X-Amz-Signature=" in item["url"] and "X-Amz-Expires=604800" in item["url"]
            async with http.get(item["url"]) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == item["mimetype"]
                body = await resp.read()
            assert hashlib.sha256(body).digest() == hashlib.sha256(Path(item["local_path"]).read_bytes()).digest()
    big = next(o for o in files if o["output_type"] == "files")
    assert Path(big["local_path"]).stat().st_size > 16 * 1024 * 1024  # went through the multipart path
    assert seaweed.secret_key not in json.dumps(answer)


async def test_s3_from_the_environment(make_worker: WorkerFactory, seaweed: SeaweedFS) -> None:
    worker = await make_worker(s3=seaweed.target(), s3_key_prefix="env/", s3_url_expiry=3600)
    status, answer = await post(worker, {"input": {"workflow_json": outputs_graph()}})
    assert status == 200
    image = next(o for o in answer["output"] if o["output_type"] == "images")
    assert image["s3_key"].startswith("env/") and "X-Amz-Expires=3600" in image["url"]
    async with seaweed.client() as s3:
        head = await s3.head_object(Bucket=seaweed.bucket, Key=image["s3_key"])
        assert head["ContentType"] == "image/png"


async def test_wrong_s3_secret_keeps_the_file_and_reports_it(worker: Client, seaweed: SeaweedFS,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    wrong = msgspec.structs.asdict(seaweed.target(secret_access_key="not-the-secret-xyz"))
    status, answer = await post(worker, {"input": {"workflow_json": outputs_graph(), "s3": wrong}})
    assert status == 200 and answer["status"] == "completed"
    files = [o for o in answer["output"] if o.get("filename")]
    for item in files:
        assert "SignatureDoesNotMatch" in item["upload_error"] or "AccessDenied" in item["upload_error"]
        assert "url" not in item and Path(item["local_path"]).is_file()  # nothing is lost
    assert "could not be uploaded (kept on disk)" in answer["message"]
    assert "not-the-secret-xyz" not in json.dumps(answer) and "not-the-secret-xyz" not in caplog.text


# -- webhooks ----------------------------------------------------------------------------------------------------

async def test_webhook_with_extra_params_and_valid_hmac(worker: Client) -> None:
    async with webhook_receiver() as hook:
        body = {"input": {"workflow_json": steps_graph(2), "webhook": {
            "url": hook.url, "secret": "hook-secret", "extra_params": {"custom_field": "value", "n": 3}}}}
        status, answer = await post(worker, body)
        assert status == 200
        ((headers, raw),) = await hook.wait()
    expected = "sha256=" + hmac.new(b"hook-secret", raw, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == expected
    payload = json.loads(raw)
    assert payload["extra"] == {"custom_field": "value", "n": 3}
    assert {k: payload[k] for k in ("id", "status", "prompt_id")} == \
        {k: answer[k] for k in ("id", "status", "prompt_id")}


async def test_webhook_from_environment_for_a_failed_job(make_worker: WorkerFactory) -> None:
    async with webhook_receiver() as hook:
        worker = await make_worker(webhook_url=hook.url, webhook_secret="env-secret")
        status, _ = await post(worker, {"input": {"workflow_json": {"1": {"class_type": "PyworkerRaise", "inputs": {
            "message": "no", "seed": uuid.uuid4().int % 2**62}}}}})
        assert status == 500
        ((headers, raw),) = await hook.wait()
    assert headers[SIGNATURE_HEADER] == "sha256=" + hmac.new(b"env-secret", raw, hashlib.sha256).hexdigest()
    assert json.loads(raw)["status"] == "failed"


async def test_webhook_down_does_not_delay_the_answer_and_is_retried(worker: Client) -> None:
    port = free_port()  # nothing listens there yet
    started = time.monotonic()
    status, answer = await post(worker, {"input": {"workflow_json": steps_graph(1), "webhook": {
        "url": f"http://127.0.0.1:{port}/hook", "timeout": 2}}})
    elapsed = time.monotonic() - started
    assert status == 200 and answer["status"] == "completed"
    assert elapsed < 2.0
    async with webhook_receiver(port) as hook:  # the receiver comes back
        hook.fail_next = 1  # and fails once more with a 503, which is retried too
        ((_, raw),) = await hook.wait(timeout=30)
        assert hook.attempts >= 2
    assert json.loads(raw)["id"] == answer["id"]


# -- failures ----------------------------------------------------------------------------------------------------

async def test_runtime_error_is_500_naming_the_node(worker: Client) -> None:
    status, answer = await post(worker, {"input": {"workflow_json": {"5": {"class_type": "PyworkerRaise", "inputs": {
        "message": "the tensor is on fire", "seed": uuid.uuid4().int % 2**62}}}}})
    assert status == 500
    assert answer["status"] == "failed"
    assert answer["error"] == {"node_id": "5", "node_type": "PyworkerRaise", "exception_type": "ValueError",
                               "exception_message": "the tensor is on fire"}
    assert "node 5 (PyworkerRaise)" in answer["message"] and "Traceback" not in json.dumps(answer)


async def test_comfyui_unreachable_at_start_is_503(make_worker: WorkerFactory) -> None:
    worker = await make_worker(wait_ready=False, comfyui_url=f"http://127.0.0.1:{free_port()}")
    deadline = time.monotonic() + 5
    while True:
        health = await (await worker.get("/health")).json()
        if "not answering" in health["error_msg"]:
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    resp = await worker.post("/generate/sync", json={"input": {"workflow_json": steps_graph(1)}})
    assert resp.status == 503 and resp.headers["Retry-After"]
    assert "not answering" in (await resp.json())["error"]


async def test_comfyui_gone_mid_job_is_502(make_worker: WorkerFactory, comfy: EmbeddedComfyUI) -> None:
    async with TcpProxy(comfy.port) as proxy:
        worker = await make_worker(comfyui_url=proxy.url)
        job = asyncio.create_task(post(worker, {"input": {"workflow_json": steps_graph(1000, 0.01)}}))
        await asyncio.sleep(1.0)
        await proxy.shutdown()  # ComfyUI vanishes, as in a crash
        started = time.monotonic()
        status, answer = await job
        assert status == 502 and "ComfyUI" in answer["error"]
        assert time.monotonic() - started < 5
        health = await (await worker.get("/health")).json()
        assert "not answering" in health["error_msg"] and health["ready"] is False
    async with ComfyClient(comfy.url) as c:  # the real ComfyUI: stop the orphaned prompt
        await c.api.interrupt((await c.api.queue()).running_ids().pop())


async def test_timeout_is_504_and_the_prompt_is_stopped(make_worker: WorkerFactory) -> None:
    worker = await make_worker(job_timeout=1.0)
    started = time.monotonic()
    status, answer = await post(worker, {"input": {"workflow_json": steps_graph(1000, 0.01)}})
    assert status == 504 and answer["status"] == "timeout"
    assert time.monotonic() - started < 4
    status, _ = await post(worker, {"input": {"workflow_json": steps_graph(1)}})  # ComfyUI is free again
    assert status == 200


async def test_comfyui_validation_errors_are_400_with_node_errors(worker: Client) -> None:
    status, answer = await post(worker, {"input": {"workflow_json": steps_graph(steps=0)}})
    assert status == 400
    assert answer["path"] == "$.input.workflow_json"
    assert answer["node_errors"]["1"]["errors"][0]["type"] == "value_smaller_than_min"
    assert "node 1 (PyworkerSteps)" in answer["error"]


async def test_dropped_branches_are_reported_as_warnings(worker: Client) -> None:
    wf = {**steps_graph(1), "9": {"class_type": "PyworkerSteps", "inputs": {"steps": 0, "step_seconds": 0.0,
                                                                             "seed": 1}}}
    status, answer = await post(worker, {"input": {"workflow_json": wf}})
    assert status == 200 and answer["status"] == "completed"
    assert answer["warnings"]["9"]["errors"][0]["type"] == "value_smaller_than_min"


async def test_body_too_large_is_413(make_worker: WorkerFactory) -> None:
    worker = await make_worker(max_body_bytes=4096)
    status, answer = await post(worker, {"input": {"workflow_json": steps_graph(1), "pad": "x" * 8192}})
    assert status == 413 and "4096" in answer["error"]


# -- input images ------------------------------------------------------------------------------------------------

def _png_bytes() -> bytes:
    import struct
    import zlib
    raw = b"".join(b"\x00" + b"\x10\x80\xf0" * 8 for _ in range(8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


LOAD_AND_SAVE = {"1": {"class_type": "LoadImage", "inputs": {"image": "pw_in.png"}},
                 "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "pw_loaded"}}}


async def test_input_image_as_base64(worker: Client) -> None:
    name = f"pw_in_{uuid.uuid4().hex[:6]}.png"
    wf = json.loads(json.dumps(LOAD_AND_SAVE).replace("pw_in.png", name))
    data = base64.b64encode(_png_bytes()).decode()
    status, answer = await post(worker, {"input": {"workflow_json": wf, "images": [{"name": name, "base64": data}]}})
    assert status == 200, answer
    assert answer["output"][0]["filename"].startswith("pw_loaded")


async def _image_server() -> tuple[web.AppRunner, str]:
    async def cat(_: web.Request) -> web.Response:
        return web.Response(body=_png_bytes(), content_type="image/png")

    app = web.Application()
    app.router.add_get("/cat.png", cat)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/cat.png"


async def test_input_image_url_private_refused_unless_allowed(make_worker: WorkerFactory,
                                                              demo_checkpoint: str) -> None:
    runner, url = await _image_server()
    try:
        body = {"input": {"workflow_json": LOAD_AND_SAVE, "images": [{"name": "pw_in.png", "url": url}]}}
        status, answer = await post(await make_worker(), body)
        assert status == 400 and answer["path"] == "$.input.images[0]" and "loopback" in answer["error"]
        allowed = await make_worker(allow_private_image_urls=True, default_checkpoint=demo_checkpoint)
        status, answer = await post(allowed, body)
        assert status == 200, answer
        img2img = {"input": {"modifier": "Image2Image", "modifications": {"image": url, "steps": 2, "prompt": "ink"}}}
        status, answer = await post(allowed, img2img)
        assert status == 200, answer
        assert answer["output"][0]["filename"].startswith("img2img")
    finally:
        await runner.cleanup()


# -- the operator's progress log ---------------------------------------------------------------------------------

async def test_progress_log_lines(worker: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pyworker.jobs")
    status, answer = await post(worker, {"input": {"request_id": "log-me", "workflow_json": steps_graph(30, 0.05)}})
    assert status == 200
    lines = [r for r in caplog.records if r.name == "pyworker.jobs" and "log-me" in r.getMessage()]
    states = [r.fields["state"] for r in lines]  # type: ignore[attr-defined]
    assert states[0] == "accepted" and states[-2:] == ["executed", "answered"]
    assert "running" in states
    progress = [r for r in lines if r.fields["state"] == "progress"]  # type: ignore[attr-defined]
    assert 2 <= len(progress) <= 4  # 1.5 s of steps: at most one line a second, plus the last step
    last = progress[-1].getMessage()
    assert f"prompt_id={answer['prompt_id']}" in last and "step=30/30" in last and "it_s=" in last


async def test_comfyui_is_released_before_outputs_are_uploaded(worker: Client, seaweed: SeaweedFS,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """The next job executes while the previous job's outputs are still being uploaded. ComfyUI's own
    execution timestamps come from the job log (the worker deletes ComfyUI's history entries)."""
    caplog.set_level(logging.INFO, logger="pyworker.jobs")
    s3 = msgspec.structs.asdict(seaweed.target())
    big = asyncio.create_task(post(worker, {"input": {"workflow_json": outputs_graph(file_mb=96), "s3": s3}}))
    await asyncio.sleep(0.05)
    small = asyncio.create_task(post(worker, {"input": {"workflow_json": steps_graph(1)}}))
    (status, answer), (_, next_answer) = await asyncio.gather(big, small)
    assert status == 200 and all("url" in o for o in answer["output"] if o.get("filename"))
    executed = {r.fields["prompt_id"]: r.fields for r in caplog.records  # type: ignore[attr-defined]
                if r.name == "pyworker.jobs" and r.fields["state"] == "executed"}  # type: ignore[attr-defined]
    big_ended = executed[answer["prompt_id"]]["comfy_end_ms"]
    next_started = executed[next_answer["prompt_id"]]["comfy_start_ms"]
    upload_ms = answer["timings"]["postprocess_ms"]
    assert upload_ms > 100  # 96 MB to S3 takes a while
    assert next_started - big_ended < upload_ms / 2, (next_started - big_ended, upload_ms)


async def test_comfyui_history_is_cleaned_up(worker: Client, comfy: EmbeddedComfyUI) -> None:
    _, answer = await post(worker, {"input": {"workflow_json": steps_graph(1)}})
    async with ComfyClient(comfy.url, forget_history=False) as c:
        deadline = time.monotonic() + 3
        while await c.api.history(answer["prompt_id"]) is not None:
            assert time.monotonic() < deadline, "the worker left its prompt in ComfyUI's history"
            await asyncio.sleep(0.1)


async def test_client_gone_after_execution_still_uploads_and_calls_the_webhook(
        worker: Client, seaweed: SeaweedFS, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pyworker.jobs")
    s3 = msgspec.structs.asdict(seaweed.target())
    async with webhook_receiver() as hook:
        body = {"input": {"request_id": "gone-after-exec", "workflow_json": outputs_graph(file_mb=64), "s3": s3,
                          "webhook": {"url": hook.url}}}
        request = asyncio.create_task(post(worker, body))
        deadline = time.monotonic() + 30
        while not any(getattr(r, "fields", {}).get("state") == "executed" and "gone-after-exec" in r.getMessage()
                      for r in caplog.records):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        request.cancel()  # the client hangs up while the outputs upload
        with pytest.raises(asyncio.CancelledError):
            await request
        ((_, raw),) = await hook.wait(timeout=60)
    payload = json.loads(raw)
    assert payload["id"] == "gone-after-exec" and payload["status"] == "completed"
    assert all(o.get("url") for o in payload["output"] if o.get("filename"))
