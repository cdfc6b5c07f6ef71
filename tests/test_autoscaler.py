"""The worker behind an autoscaler: signed requests, reports, admission, readiness, crash and recovery.

The autoscaler is a real local server (tests/servers.py: AutoscalerEmulator). The benchmark here runs the test
step node (a known rate) instead of SD1.5, so that the worker goes ready in a second."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import rsa

from pyworker.comfy_ws import ComfyClient
from pyworker.embedded import EmbeddedComfyUI
from pyworker.http.app import EMBEDDED
from tests.conftest import WorkerFactory, make_base, steps_graph, wait_until_ready
from tests.servers import AutoscalerEmulator

Client = TestClient[web.Request, web.Application]
STATUS_FIELDS = {"id", "mtoken", "version", "loadtime", "cur_load", "rej_load", "new_load", "error_msg", "max_perf",
                 "cur_perf", "cur_capacity", "max_capacity", "num_requests_working", "num_requests_recieved",
                 "additional_disk_usage", "working_request_idxs", "url"}


def bench_workflow(tmp_path: Path, step_seconds: float = 0.01) -> Path:
    path = tmp_path / f"bench_steps_{step_seconds}.json"
    path.write_text(json.dumps({"1": {"class_type": "PyworkerSteps",
                                      "inputs": {"steps": 20, "step_seconds": step_seconds, "seed": 0}}}))
    return path


def autoscaled(emu: AutoscalerEmulator, tmp_path: Path, **more: Any) -> dict[str, Any]:
    return {"report_addr": [emu.url], "container_id": "4242", "master_token": "mtok-secret",
            "public_ipaddr": "203.0.113.7", "vast_tcp_port": 41000, "benchmark_workflow": bench_workflow(tmp_path),
            "benchmark_test_steps": 20, "benchmark_runs": 1, "benchmark_cache": tmp_path / "bench-cache.json",
            "benchmark_report": tmp_path / "bench.json", **more}


async def signed_post(worker: Client, emu: AutoscalerEmulator, body: dict[str, Any],
                      **auth: Any) -> tuple[int, dict[str, Any]]:
    envelope = {"auth_data": emu.auth_data(**auth), "payload": body, "session_id": None}
    resp = await worker.post("/generate/sync", json=envelope)
    return resp.status, await resp.json()


@pytest.fixture
async def emu() -> Any:
    async with AutoscalerEmulator() as server:
        yield server


async def test_signed_requests_valid_forged_replayed_unsigned(make_worker: WorkerFactory, emu: AutoscalerEmulator,
                                                              tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    worker = await make_worker(**autoscaled(emu, tmp_path))
    body = {"input": {"workflow_json": steps_graph(1)}}
    assert (await signed_post(worker, emu, body))[0] == 200  # the current form: {"url"} with indent 4
    status, _ = await signed_post(worker, emu, body, form="all-fields", cost="1")  # the previous form, cost a string
    assert status == 200
    assert (await signed_post(worker, emu, body, form="known-fields-indent4"))[0] == 200  # Vast's 1.0.x library
    caplog.set_level(logging.WARNING, logger="pyworker.autoscaler.auth")
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    status, answer = await signed_post(worker, emu, body, key=forger)
    assert (status, answer) == (401, {"error": "unauthorized"})
    assert "tried url-indent4, all-fields" in caplog.text and "sha256:" in caplog.text
    bad = emu.auth_data()
    bad["reqnum"] = "nan"
    resp = await worker.post("/generate/sync", json={"auth_data": bad, "payload": body, "session_id": None})
    assert resp.status == 422
    replay = emu.auth_data()
    first = await worker.post("/generate/sync", json={"auth_data": replay, "payload": body, "session_id": None})
    again = await worker.post("/generate/sync", json={"auth_data": replay, "payload": body, "session_id": None})
    assert (first.status, again.status) == (200, 401)
    status, _ = await signed_post(worker, emu, body, reqnum=emu.reqnum - 5000)  # far older than the newest
    assert status == 401
    resp = await worker.post("/generate/sync", json=body)  # unsigned, behind an autoscaler
    assert resp.status == 401 and await resp.json() == {"error": "unauthorized"}
    assert "mtok-secret" not in caplog.text


async def test_malformed_envelope_is_422_with_a_field_map(make_worker: WorkerFactory, emu: AutoscalerEmulator,
                                                         tmp_path: Path) -> None:
    worker = await make_worker(**autoscaled(emu, tmp_path))
    auth = emu.auth_data()
    del auth["reqnum"]
    auth["cost"] = "cheap"
    resp = await worker.post("/generate/sync", json={"auth_data": auth, "session_id": None, "extra": 1})
    assert resp.status == 422
    errors = (await resp.json())["errors"]
    assert errors["auth_data"] == {"reqnum": "missing parameter", "cost": "must be a positive number or numeric string"}
    assert errors["payload"] == "field missing" and "extra" in errors


async def test_unsecured_serves_unsigned_and_badly_signed(make_worker: WorkerFactory, emu: AutoscalerEmulator,
                                                          tmp_path: Path) -> None:
    worker = await make_worker(**autoscaled(emu, tmp_path, unsecured=True))
    body = {"input": {"workflow_json": steps_graph(1)}}
    assert (await worker.post("/generate/sync", json=body)).status == 200
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert (await signed_post(worker, emu, body, key=forger))[0] == 200


async def test_readiness_and_reports_before_and_after_the_benchmark(make_worker: WorkerFactory,
                                                                   emu: AutoscalerEmulator, tmp_path: Path) -> None:
    slow_bench = bench_workflow(tmp_path, step_seconds=0.1)  # 2 runs x 20 steps x 0.1 s: 4 s to ready
    worker = await make_worker(wait_ready=False, **autoscaled(emu, tmp_path, benchmark_workflow=slow_bench))
    before = await emu.wait_status(lambda s: True, timeout=5)
    assert set(before) == STATUS_FIELDS
    assert (before["loadtime"], before["max_perf"]) == (0, 0)
    assert before["id"] == 4242 and before["mtoken"] == "mtok-secret" and before["url"] == "http://203.0.113.7:41000"
    status, answer = await signed_post(worker, emu, {"input": {"workflow_json": steps_graph(1)}})
    assert status == 503 and "benchmark" in answer["error"]
    assert (await worker.get("/benchmark")).status == 404
    await wait_until_ready(worker)
    after = await emu.wait_status(lambda s: s["loadtime"] > 0)
    assert after["max_perf"] == pytest.approx(1 / 2.0, rel=0.25)  # about 2 s per benchmark job, cost 1
    assert after["error_msg"] == ""
    report = await (await worker.get("/benchmark")).json()
    assert report["it_s"] == pytest.approx(10.0, rel=0.02) and report["verdict"] == "unrated"
    assert json.loads((tmp_path / "bench.json").read_text())["key"] == report["key"]
    assert (await signed_post(worker, emu, {"input": {"workflow_json": steps_graph(1)}}))[0] == 200


async def test_burst_with_429s_and_disconnects_adds_up(make_worker: WorkerFactory, emu: AutoscalerEmulator,
                                                        tmp_path: Path, comfy: EmbeddedComfyUI) -> None:
    # The benchmark job takes about 0.2 s (max_perf about 5 cost/s); a queue of more than 1 s of work is refused.
    worker = await make_worker(**autoscaled(emu, tmp_path, max_queue_time=1.0))
    short = {"input": {"workflow_json": steps_graph(20, 0.01)}}

    async def disconnecting() -> None:
        envelope = {"auth_data": emu.auth_data(), "payload": {"input": {"workflow_json": steps_graph(1000, 0.01)}},
                    "session_id": None}
        try:
            resp = await asyncio.wait_for(worker.post("/generate/sync", json=envelope), 0.6)  # the client hangs up
        except TimeoutError:
            return
        raise AssertionError(f"answered before the client hung up: {resp.status} {await resp.text()}")

    hangups = [asyncio.create_task(disconnecting()) for _ in range(2)]
    await asyncio.sleep(0.1)
    results = await asyncio.gather(*[signed_post(worker, emu, short) for _ in range(14)])
    await asyncio.gather(*hangups)
    codes = sorted(r[0] for r in results)
    assert codes.count(200) >= 2 and codes.count(429) >= 3 and set(codes) <= {200, 429}, codes
    rejected = next(r[1] for r in results if r[0] == 429)
    assert "queue is full" in rejected["error"]
    async with ComfyClient(comfy.url) as c:  # no disconnected prompt left running or waiting in ComfyUI
        deadline = time.monotonic() + 5
        while (q := await c.api.queue()).running_ids() or q.pending_ids():
            assert time.monotonic() - deadline < 0, "ComfyUI is still busy with abandoned prompts"
            await asyncio.sleep(0.05)
    final = await emu.wait_status(lambda s: s["num_requests_recieved"] >= 16 and s["num_requests_working"] == 0)
    assert final["working_request_idxs"] == [] and final["cur_load"] == 0
    health = await (await worker.get("/health")).json()
    c = health["counters"]
    assert c["received"] == 16 == c["working"] + c["succeeded"] + c["failed"] + c["cancelled"] + c["rejected"]
    assert c["cancelled"] == 2 and c["rejected"] == codes.count(429) and c["succeeded"] == codes.count(200)
    await asyncio.sleep(0.5)
    records = [r for d in emu.deleted for r in d["requests"]]
    assert all(d["worker_id"] == 4242 and d["mtoken"] == "mtok-secret" for d in emu.deleted)
    by_status = {s: [r for r in records if r["status"] == s] for s in ("Success", "Rejected", "Cancelled")}
    assert len(by_status["Cancelled"]) == 2 and len(by_status["Rejected"]) == codes.count(429)
    for r in by_status["Success"]:
        assert r["success"] is True and r["entered_queue_at"] <= r["work_started_at"] <= r["work_completed_at"]
    assert all(r["success"] is False for r in by_status["Rejected"])
    assert sum(s["rej_load"] for s in emu.statuses) == codes.count(429)


async def test_comfyui_crash_and_recovery_in_error_msg(make_worker: WorkerFactory, emu: AutoscalerEmulator,
                                                       tmp_path: Path) -> None:
    base = make_base(tmp_path / "own-comfy")
    worker = await make_worker(**autoscaled(emu, tmp_path, comfyui_url=None, comfyui_base_dir=base,
                                            comfyui_output_dir=None))
    embedded = worker.app[EMBEDDED] if worker.app is not None else None
    assert embedded is not None
    status, _ = await signed_post(worker, emu, {"input": {"workflow_json": {"1": {
        "class_type": "PyworkerRaise", "inputs": {"message": "client bug", "seed": 1}}}}})
    assert status == 500  # a client's broken workflow...
    await asyncio.sleep(0.5)
    assert emu.statuses[-1]["error_msg"] == ""  # ...never marks the worker as errored
    await embedded.kill()
    down = await emu.wait_status(lambda s: "ComfyUI" in s["error_msg"], timeout=10)
    assert down["error_msg"]
    back = await emu.wait_status(lambda s: s["error_msg"] == "" and s is not down and emu.statuses.index(s) >
                                 emu.statuses.index(down), timeout=60)
    assert back["loadtime"] > 0
    status, _ = await signed_post(worker, emu, {"input": {"workflow_json": steps_graph(1)}})
    assert status == 200


@pytest.mark.parametrize("mode", ["flag", "refuse"])
async def test_screening_flags_or_refuses_a_slow_machine(make_worker: WorkerFactory, emu: AutoscalerEmulator,
                                                         tmp_path: Path, mode: str) -> None:
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"it_s": {"cpu": 1000.0}}))  # the test node steps at 100 it/s: far too slow
    worker = await make_worker(wait_ready=False, **autoscaled(emu, tmp_path, gpu_reference=ref,
                                                              benchmark_screening=mode))
    flagged = await emu.wait_status(lambda s: "UNDERPERFORMING" in s["error_msg"], timeout=20)
    health = await (await worker.get("/health")).json()
    if mode == "flag":
        assert flagged["loadtime"] > 0 and flagged["max_perf"] > 0 and health["ready"] is True
    else:
        await asyncio.sleep(1.5)
        assert emu.statuses[-1]["loadtime"] == 0 and health["ready"] is False
        assert (await signed_post(worker, emu, {"input": {"workflow_json": steps_graph(1)}}))[0] == 503
    report = await (await worker.get("/benchmark")).json()
    assert report["verdict"] == "slow" and report["expected_it_s"] == 1000.0
