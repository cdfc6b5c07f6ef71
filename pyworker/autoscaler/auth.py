"""Requests routed by the autoscaler: the envelope ``{"auth_data", "payload", "session_id"}`` and its RSA
signature (PKCS#1 v1.5 over SHA-256, base64).

The signed-message forms accepted, all rebuilt from the values exactly as received (re-encoding ``"100"`` as
``100`` would change the signed bytes):
- current: ``json.dumps({"url": url}, indent=4, sort_keys=True)``;
- previous: the auth_data fields but ``signature`` and ``__request_id``, ``sort_keys=True``, as
  ``json.dumps`` writes them plainly or with ``indent=4``, either every field received or only Vast's own five
  (``cost, endpoint, reqnum, request_idx, url``).
Replays are refused: a ``reqnum`` already seen, or more than ``replay_window`` below the newest.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import math
from typing import Any, Final

import aiohttp
import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from pyworker.errors import WorkerError

log = logging.getLogger(__name__)

AUTH_FIELDS: Final = ("cost", "endpoint", "reqnum", "request_idx", "signature", "url")
NUMERIC: Final = ("cost", "reqnum", "request_idx")


class Unauthorized(WorkerError):
    """401 with no detail for the client; the reason goes to the log only."""

    status = 401

    def __init__(self) -> None:
        super().__init__("unauthorized")


class MalformedEnvelope(WorkerError):
    """422 with a map of what is wrong in each field."""

    status = 422

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__("malformed autoscaler envelope")
        self.errors = errors

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "errors": self.errors}


class AuthData(msgspec.Struct, frozen=True):
    """``auth_data`` as received (``raw``) with its fields checked and read."""

    raw: dict[str, Any]
    cost: float
    reqnum: int
    request_idx: int
    url: str
    signature: str


def parse_auth_data(raw: object) -> AuthData:
    """Check ``auth_data``: every field present, numbers given as numbers or numeric strings."""
    if not isinstance(raw, dict):
        raise MalformedEnvelope({"auth_data": "must be an object"})
    errors: dict[str, str] = {f: "missing parameter" for f in AUTH_FIELDS if f not in raw}
    numbers: dict[str, float] = {}
    for field in NUMERIC:
        if field in raw:
            value = raw[field]
            try:
                if isinstance(value, bool) or not isinstance(value, int | float | str):
                    raise ValueError
                number = float(value)
                if not math.isfinite(number) or number < 0 or (field == "cost" and number <= 0):
                    raise ValueError
                numbers[field] = number
            except ValueError:
                errors[field] = ("must be a positive number or numeric string" if field == "cost"
                                 else "must be a non-negative number or numeric string")
    for field in ("url", "signature", "endpoint"):
        if field in raw and not isinstance(raw[field], str):
            errors[field] = "must be a string"
    if errors:
        raise MalformedEnvelope({"auth_data": errors})
    return AuthData(raw=raw, cost=numbers["cost"], reqnum=int(numbers["reqnum"]),
                    request_idx=int(numbers["request_idx"]), url=raw["url"], signature=raw["signature"])


def signed_messages(raw: dict[str, Any]) -> dict[str, bytes]:
    """The candidate signed messages, by form name (duplicates removed)."""
    every = {k: v for k, v in raw.items() if k not in ("signature", "__request_id")}
    known = {k: raw[k] for k in ("cost", "endpoint", "reqnum", "request_idx", "url") if k in raw}
    forms = {
        "url-indent4": json.dumps({"url": raw.get("url")}, indent=4, sort_keys=True).encode(),
        "all-fields": json.dumps(every, sort_keys=True).encode(),
        "all-fields-indent4": json.dumps(every, indent=4, sort_keys=True).encode(),
        "known-fields": json.dumps(known, sort_keys=True).encode(),
        "known-fields-indent4": json.dumps(known, indent=4, sort_keys=True).encode(),
    }
    unique: dict[str, bytes] = {}
    for name, message in forms.items():
        if message not in unique.values():
            unique[name] = message
    return unique


def fingerprint(key: rsa.RSAPublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()[:16]


class Verifier:
    """Checks signatures with the autoscaler's public key and refuses replays."""

    def __init__(self, key: rsa.RSAPublicKey | None = None, replay_window: int = 1000) -> None:
        self.key = key
        self.replay_window = replay_window
        self._seen: set[int] = set()
        self._newest = -1

    @staticmethod
    def load_key(pem: bytes) -> rsa.RSAPublicKey:
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("the autoscaler's public key is not an RSA key")
        return key

    async def fetch_key(self, session: aiohttp.ClientSession, addresses: list[str], attempts: int = 5,
                        backoff: float = 0.5) -> None:
        """GET {addr}/pubkey/ from the first address that answers, retrying with backoff."""
        for attempt in range(attempts):
            for addr in addresses:
                try:
                    async with session.get(addr.rstrip("/") + "/pubkey/",
                                           timeout=aiohttp.ClientTimeout(total=5)) as resp:
                        if resp.status == 200:
                            self.key = self.load_key(await resp.read())
                            log.info("autoscaler public key %s from %s", fingerprint(self.key), addr)
                            return
                        log.warning("GET %s/pubkey/ answered %d", addr, resp.status)
                except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                    log.warning("GET %s/pubkey/ failed: %s", addr, type(exc).__name__)
            await asyncio.sleep(backoff * 2**attempt)
        raise ConnectionError("could not fetch the autoscaler's public key from " + ", ".join(addresses))

    def verify(self, auth: AuthData) -> None:
        """Raise :class:`Unauthorized` unless the signature is valid for one form and the request is new."""
        if self.key is None:
            log.warning("request %s refused: no autoscaler public key yet", auth.request_idx)
            raise Unauthorized()
        try:
            sig = base64.b64decode(auth.signature, validate=True)
        except (binascii.Error, ValueError):
            log.warning("request %s refused: signature is not base64 (key %s)", auth.request_idx,
                        fingerprint(self.key))
            raise Unauthorized() from None
        forms = signed_messages(auth.raw)
        form = self._matching_form(self.key, sig, forms)
        if form is None:
            log.warning("request %s refused: signature matches no signed-message form (tried %s; key %s; "
                        "reqnum %s; url %s; auth_data fields %s)", auth.request_idx, ", ".join(forms),
                        fingerprint(self.key), auth.reqnum, auth.url, ",".join(sorted(auth.raw)))
            raise Unauthorized()
        if auth.reqnum in self._seen or auth.reqnum < self._newest - self.replay_window:
            log.warning("request %s refused: replayed reqnum %d (newest %d)", auth.request_idx, auth.reqnum,
                        self._newest)
            raise Unauthorized()
        self._seen.add(auth.reqnum)
        if auth.reqnum > self._newest:
            self._newest = auth.reqnum
            floor = self._newest - self.replay_window
            if len(self._seen) > 2 * self.replay_window:
                self._seen = {n for n in self._seen if n >= floor}
        log.debug("request %s signed (%s form)", auth.request_idx, form)

    @staticmethod
    def _matching_form(key: rsa.RSAPublicKey, sig: bytes, forms: dict[str, bytes]) -> str | None:
        for name, message in forms.items():
            try:
                key.verify(sig, message, padding.PKCS1v15(), hashes.SHA256())
                return name
            except InvalidSignature:
                continue
        return None
