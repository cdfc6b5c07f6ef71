"""Request bodies decoded in one place; every decoding error becomes a 400 that names the field."""

from __future__ import annotations

import re
from typing import Any, Final

import msgspec

from pyworker.autoscaler.auth import AuthData, MalformedEnvelope, parse_auth_data
from pyworker.errors import BadRequest
from pyworker.messages import GenerateInput, GenerateRequest, InputImage, S3Request, WebhookRequest

_decoder: Final = msgspec.json.Decoder(GenerateRequest)
_STRUCT_AT: Final[list[tuple[re.Pattern[str], type[msgspec.Struct]]]] = [
    (re.compile(r"^\$$"), GenerateRequest),
    (re.compile(r"^\$\.input$"), GenerateInput),
    (re.compile(r"^\$\.input\.s3$"), S3Request),
    (re.compile(r"^\$\.input\.webhook$"), WebhookRequest),
    (re.compile(r"^\$\.input\.images\[\d+\]$"), InputImage),
]
_AT: Final = re.compile(r"^(?P<what>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.S)


def _accepted(path: str) -> str:
    for pattern, struct in _STRUCT_AT:
        if pattern.match(path):
            return ", ".join(struct.__struct_fields__)
    return ""


def decode_request(body: bytes | msgspec.Raw) -> GenerateRequest:
    try:
        return _decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise _bad_request(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the body is not valid JSON ({exc})") from None


def _bad_request(message: str) -> BadRequest:
    m = _AT.match(message)
    assert m is not None
    what, path = m["what"], m["path"] or "$"
    if unknown := re.match(r"Object contains unknown field `(.+)`", what):
        field = unknown[1]
        return BadRequest(f"unknown field {field!r}; accepted: {_accepted(path)}", path=f"{path}.{field}")
    if missing := re.match(r"Object missing required field `(.+)`", what):
        return BadRequest(f"missing required field {missing[1]!r}", path=f"{path}.{missing[1]}")
    return BadRequest(_explain(what), path=path)


def _explain(what: str) -> str:
    hints: dict[str, Any] = {
        "Expected `str` matching regex": "a string of letters, digits, '.', '_' or '-' (for an URL: http(s)://...)",
    }
    for prefix, hint in hints.items():
        if what.startswith(prefix):
            return f"{what}: {hint}"
    return what


class Envelope(msgspec.Struct):
    """A decoded body: the request and, when the autoscaler routed it, its ``auth_data`` as received."""

    request: GenerateRequest
    auth: AuthData | None


_top: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])


def decode_body(body: bytes) -> Envelope:
    """Either form: ``{"input": ...}`` or ``{"auth_data", "payload", "session_id"}`` (422 when malformed)."""
    try:
        top = _top.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return Envelope(request=decode_request(body), auth=None)  # raises the right 400
    if "auth_data" not in top and "payload" not in top:
        return Envelope(request=decode_request(body), auth=None)
    errors: dict[str, Any] = {}
    unknown = sorted(set(top) - {"auth_data", "payload", "session_id"})
    for key in unknown:
        errors[key] = "unknown field; accepted: auth_data, payload, session_id"
    auth: AuthData | None = None
    if "auth_data" not in top:
        errors["auth_data"] = "field missing"
    else:
        try:
            auth = parse_auth_data(msgspec.json.decode(top["auth_data"]))
        except MalformedEnvelope as exc:
            errors.update(exc.errors)
    if "payload" not in top:
        errors["payload"] = "field missing"
    if errors:
        raise MalformedEnvelope(errors)
    return Envelope(request=decode_request(top["payload"]), auth=auth)
