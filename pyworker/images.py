"""Input images for a workflow: fetched from an http(s) URL (size limit, timeout, no private addresses unless
allowed) or decoded from base64 (a data: URI prefix is accepted). Knows HTTP fetching only."""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
from urllib.parse import urlsplit

import aiohttp

from pyworker.errors import BadRequest


async def _check_address(host: str, port: int, path: str) -> None:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise BadRequest(f"image URL host {host!r} does not resolve", path=path) from None
    for info in infos:
        addr = ipaddress.ip_address(info[4][0])
        if (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_reserved
                or addr.is_multicast or addr.is_unspecified):
            raise BadRequest(
                f"image URL host {host!r} is a private, loopback or link-local address; not fetched "
                "(an operator can allow it with ALLOW_PRIVATE_IMAGE_URLS=true)", path=path)


async def load_image(
    source: str, *, path: str, session: aiohttp.ClientSession, max_bytes: int, timeout: float,
    allow_private: bool,
) -> bytes:
    """The image's bytes from an http(s) URL or base64 text. Every failure is a 400 naming ``path``."""
    if source.startswith(("http://", "https://")):
        parts = urlsplit(source)
        if not parts.hostname:
            raise BadRequest("image URL has no host", path=path)
        if not allow_private:
            await _check_address(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), path)
        try:
            async with session.get(source, timeout=aiohttp.ClientTimeout(total=timeout),
                                   allow_redirects=allow_private) as resp:
                if resp.status != 200:
                    raise BadRequest(f"image URL answered HTTP {resp.status}", path=path)
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise BadRequest(f"image is larger than {max_bytes} bytes", path=path)
                buf = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    buf += chunk
                    if len(buf) > max_bytes:
                        raise BadRequest(f"image is larger than {max_bytes} bytes", path=path)
                return bytes(buf)
        except TimeoutError:
            raise BadRequest(f"image URL did not answer within {timeout:.0f} s", path=path) from None
        except aiohttp.ClientError as exc:
            raise BadRequest(f"image URL could not be fetched ({type(exc).__name__})", path=path) from None
    text = source.split(",", 1)[1] if source.startswith("data:") and "," in source else source
    if len(text) * 3 // 4 > max_bytes:
        raise BadRequest(f"image is larger than {max_bytes} bytes", path=path)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("image is neither an http(s) URL nor valid base64", path=path) from None
    if not data:
        raise BadRequest("image is empty", path=path)
    return data
