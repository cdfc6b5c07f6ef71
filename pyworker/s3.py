"""Uploads outputs to S3 (aiobotocore): streamed from disk, multipart above a threshold, presigned GET URLs.

Knows S3 only. Errors never carry credentials: they name the S3 error code or the kind of failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.os
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from pyworker.settings import S3Target
from pyworker.tasks import gather_all

log = logging.getLogger(__name__)

MiB = 1024 * 1024


class UploadFailed(Exception):
    """An upload that failed after its retries; the message is safe to show a client."""


def client_config() -> AioConfig:
    return AioConfig(
        signature_version="s3v4",  # botocore makes SigV2 presigned URLs for us-east-1 otherwise
        s3={"addressing_style": "path"},
        retries={"max_attempts": 1, "mode": "standard"},  # retried here, with backoff and a log line
        connect_timeout=5,
        read_timeout=120,
        max_pool_connections=16,
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        return f"S3 refused the upload: {err.get('Code', 'error')} (HTTP {status})"
    return f"S3 unreachable or failing: {type(exc).__name__}"


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
        return int(status) >= 500 or int(status) in (408, 429)
    return True


class S3Uploader:
    """One aiobotocore client per S3 target while in use. The operator's target (from the environment) keeps
    its client for the worker's life; a request's own target gets a client for that request only."""

    def __init__(
        self,
        *,
        default: S3Target | None,
        url_expiry: int = 604800,
        multipart_threshold: int = 32 * MiB,
        part_size: int = 8 * MiB,
        part_concurrency: int = 2,
        attempts: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.default = default
        self.url_expiry = url_expiry
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.part_concurrency = part_concurrency
        self.attempts = attempts
        self.backoff = backoff
        self._stack = contextlib.AsyncExitStack()
        self._default_client: Any = None
        self._session = get_session()

    async def __aenter__(self) -> S3Uploader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def _client(self, target: S3Target) -> Any:
        return self._session.create_client(
            "s3", region_name=target.region, endpoint_url=target.endpoint_url,
            aws_access_key_id=target.access_key_id, aws_secret_access_key=target.secret_access_key,
            config=client_config(),
        )

    @contextlib.asynccontextmanager
    async def client_for(self, target: S3Target) -> Any:
        if target == self.default:
            if self._default_client is None:
                self._default_client = await self._stack.enter_async_context(self._client(target))
            yield self._default_client
        else:
            async with self._client(target) as client:
                yield client

    async def upload(self, client: Any, target: S3Target, path: Path, key: str, content_type: str) -> str:
        """Upload ``path`` to ``key`` (retrying with backoff) and return a presigned GET URL.
        Raises :class:`UploadFailed` with a client-safe message."""
        size = (await aiofiles.os.stat(path)).st_size
        for attempt in range(1, self.attempts + 1):
            try:
                if size >= self.multipart_threshold:
                    await self._multipart(client, target.bucket_name, path, key, content_type, size)
                else:
                    async with aiofiles.open(path, "rb") as f:
                        body = await f.read()
                    await client.put_object(Bucket=target.bucket_name, Key=key, Body=body, ContentType=content_type)
                url: str = await client.generate_presigned_url(
                    "get_object", Params={"Bucket": target.bucket_name, "Key": key}, ExpiresIn=self.url_expiry
                )
                return url
            except (TimeoutError, ClientError, BotoCoreError, OSError) as exc:
                message = _describe(exc)
                if attempt == self.attempts or not _retryable(exc):
                    log.warning("upload of %s to bucket %s failed: %s", key, target.bucket_name, message)
                    raise UploadFailed(message) from None
                log.info("upload of %s failed (%s); retry %d of %d", key, message, attempt, self.attempts - 1)
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def _multipart(self, client: Any, bucket: str, path: Path, key: str, content_type: str, size: int) -> None:
        created = await client.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type)
        upload_id = created["UploadId"]
        limit = asyncio.Semaphore(self.part_concurrency)  # bounds memory: part_concurrency x part_size

        async def part(number: int, offset: int) -> dict[str, Any]:
            async with limit:
                async with aiofiles.open(path, "rb") as f:
                    await f.seek(offset)
                    body = await f.read(self.part_size)
                answer = await client.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                )
                return {"PartNumber": number, "ETag": answer["ETag"]}

        try:
            parts = await gather_all(part(i + 1, off) for i, off in enumerate(range(0, size, self.part_size)))
            await client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(ClientError, BotoCoreError, OSError):
                await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise
