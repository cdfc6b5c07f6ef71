"""``python -m pyworker run-workflow`` against the session's real ComfyUI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from pathlib import Path

import aiohttp

from pyworker.embedded import EmbeddedComfyUI, free_port
from tests.conftest import WorkerFactory, outputs_graph, steps_graph
from tests.servers import AutoscalerEmulator

ROOT = Path(__file__).resolve().parent.parent


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pyworker", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_run_workflow_prints_progress_and_outputs(comfy: EmbeddedComfyUI, demo_checkpoint: str,
                                                        tmp_path: Path) -> None:
    wf = json.loads((ROOT / "misc" / "workflows" / "sd15_default.json").read_text())
    wf["4"]["inputs"]["ckpt_name"] = demo_checkpoint
    wf["3"]["inputs"]["seed"] = uuid.uuid4().int % 2**32
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(wf))
    code, out, err = await _cli("run-workflow", str(path), "--comfy-url", comfy.url,
                                "--width", "64", "--height", "64", "--steps", "3")
    assert code == 0, err
    assert "node 3 KSampler  step 3/3" in out
    assert "succeeded" in out
    assert "output images (node 9): " in out  # a remote ComfyUI: the name and folder, not a local path


async def test_run_workflow_failure_exit_code_and_bad_file(comfy: EmbeddedComfyUI, tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"1": {"class_type": "PyworkerRaise", "inputs": {"message": "nope", "seed": 5}}}))
    code, out, _ = await _cli("run-workflow", str(path), "--comfy-url", comfy.url)
    assert code == 1
    assert "failed at node 1 (PyworkerRaise): ValueError: nope" in out
    path.write_text("{not json")
    code, _, err = await _cli("run-workflow", str(path), "--comfy-url", comfy.url)
    assert code == 2 and "cannot read an API-format workflow" in err


async def test_serve_answers_and_logs_json_lines(comfy: EmbeddedComfyUI, demo_checkpoint: str) -> None:
    port = free_port()
    env = {**os.environ, "COMFYUI_OUTPUT_DIR": str(comfy.output_dir), "DEFAULT_CHECKPOINT": demo_checkpoint,
           "LOG_FORMAT": "json", "WORKER_PORT": str(port)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pyworker", "serve", "--host", "127.0.0.1", "--comfy-url", comfy.url, cwd=ROOT,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                        if resp.status == 200 and (await resp.json())["comfyui_connected"]:
                            break
                await asyncio.sleep(0.1)
            body = {"input": {"modifier": "Text2Image", "modifications": {"prompt": "a cat sitting on a windowsill",
                                                                          "width": 64, "height": 64, "steps": 2}}}
            async with http.post(f"http://127.0.0.1:{port}/generate/sync", json=body) as resp:
                assert resp.status == 200
                answer = await resp.json()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await proc.communicate()
    assert proc.returncode == 0
    lines = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    states = [entry["state"] for entry in lines if entry.get("request_id") == answer["id"]]
    assert states[0] == "accepted" and states[-1] == "answered"


async def test_serve_refuses_a_bad_setting() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pyworker", "serve", cwd=ROOT, env={**os.environ, "WEBHOOK_TIMEOUT": "never"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "WEBHOOK_TIMEOUT" in err.decode() and "Traceback" not in err.decode()


async def test_client_direct_and_through_the_autoscaler_route(make_worker: WorkerFactory, tmp_path: Path) -> None:
    worker = await make_worker()
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(outputs_graph()))
    code, out, err = await _cli("client", "--url", str(worker.make_url("")), "--workflow", str(wf),
                                "--out", str(tmp_path / "out"), "--base64")
    assert code == 0, err
    assert "HTTP 200" in out and "saved" in out
    assert {p.suffix for p in (tmp_path / "out").iterdir()} == {".png", ".gif", ".wav", ".bin", ".txt"}
    async with AutoscalerEmulator() as emu:
        routed = await make_worker(report_addr=[emu.url], benchmark="off")
        emu.worker_url = str(routed.make_url(""))
        code, out, err = await _cli("client", "--route-url", emu.url + "/route/", "--endpoint", "test",
                                    "--workflow", str(wf), "--out", str(tmp_path / "out2"))
        assert code == 0, err + out
        assert "HTTP 200" in out
        await emu.wait_status(lambda s: s["num_requests_recieved"] == 1)


async def test_load_prints_percentiles(make_worker: WorkerFactory, tmp_path: Path) -> None:
    worker = await make_worker()
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(steps_graph(2, 0.01)))
    code, out, err = await _cli("load", "--url", str(worker.make_url("")), "--workflow", str(wf),
                                "-n", "6", "--rps", "20")
    assert code == 0, err
    assert "6 requests in" in out and "6 ok" in out and "p50" in out and "p99" in out
    assert "sent" in err  # the live display


async def test_bench_command(comfy: EmbeddedComfyUI, tmp_path: Path) -> None:
    wf = tmp_path / "bench.json"
    wf.write_text(json.dumps({"1": {"class_type": "PyworkerSteps",
                                    "inputs": {"steps": 20, "step_seconds": 0.01, "seed": 0}}}))
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"it_s": {"cpu": 100.0}}))
    env = {**os.environ, "BENCHMARK_WORKFLOW": str(wf), "BENCHMARK_RUNS": "2", "WORKER_DATA_DIR": str(tmp_path),
           "GPU_REFERENCE": str(ref)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pyworker", "bench", "--comfy-url", comfy.url, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert "expected about 100.00: as expected" in text and "run 2:" in text and "step 20/20" in text
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["verdict"] == "ok" and len(report["runs"]) == 2


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    crt, pem = tmp_path / "instance.crt", tmp_path / "instance.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()))
    return crt, pem


async def test_serve_with_use_ssl(comfy: EmbeddedComfyUI, tmp_path: Path) -> None:
    crt, pem = _self_signed(tmp_path)
    port = free_port()
    env = {**os.environ, "USE_SSL": "true", "SSL_CERT": str(crt), "SSL_KEY": str(pem), "WORKER_PORT": str(port)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pyworker", "serve", "--host", "127.0.0.1", "--comfy-url", comfy.url, cwd=ROOT,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as http:
            status = 0
            for _ in range(100):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"https://127.0.0.1:{port}/health", ssl=False) as resp:
                        status = resp.status
                        if status == 200:
                            break
                await asyncio.sleep(0.1)
            assert status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.communicate()
