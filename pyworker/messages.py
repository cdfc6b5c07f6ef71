"""The worker's own messages as msgspec Structs: the /generate/sync request and answer, the webhook payload.

ComfyUI's messages are in :mod:`pyworker.comfy_ws.events`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

RequestId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
FileName = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")]


class S3Request(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    access_key_id: Annotated[str, msgspec.Meta(min_length=1)]
    secret_access_key: Annotated[str, msgspec.Meta(min_length=1)]
    bucket_name: Annotated[str, msgspec.Meta(min_length=3, max_length=63)]
    endpoint_url: Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s]+$")] | None = None
    region: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9-]{1,32}$")] = "us-east-1"


class WebhookRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: Annotated[str, msgspec.Meta(pattern=r"^https?://")] | None = None
    extra_params: dict[str, Any] = {}
    secret: str | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0, le=600)] | None = None


class InputImage(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An image the workflow loads by ``name`` (e.g. a LoadImage node); uploaded to ComfyUI before the prompt."""

    name: FileName
    url: Annotated[str, msgspec.Meta(pattern=r"^https?://")] | None = None
    base64: str | None = None


class GenerateInput(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    request_id: RequestId | None = None
    modifier: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    modifications: dict[str, Any] | None = None
    workflow_json: dict[str, Any] | None = None
    s3: S3Request | None = None
    webhook: WebhookRequest | None = None
    return_outputs_as_base64: bool = False
    images: Annotated[list[InputImage], msgspec.Meta(max_length=64)] = []


class GenerateRequest(msgspec.Struct, forbid_unknown_fields=True):
    input: GenerateInput


class OutputItem(msgspec.Struct, omit_defaults=True, kw_only=True):
    filename: str | None
    subfolder: str
    type: str
    node_id: str
    output_type: str
    mimetype: str
    local_path: str | None = None
    url: str | None = None
    s3_key: str | None = None
    upload_error: str | None = None
    data: str | None = None
    text: str | None = None  # a text output (``output_type`` "text"): the text itself


class Timings(msgspec.Struct, kw_only=True):
    queue_ms: float = 0.0
    preprocess_ms: float = 0.0
    generation_ms: float = 0.0
    postprocess_ms: float = 0.0
    total_ms: float = 0.0


class NodeInfo(msgspec.Struct, kw_only=True):
    node_id: str
    class_type: str
    ms: float
    cached: bool


class FailedNode(msgspec.Struct, kw_only=True):
    node_id: str
    node_type: str
    exception_type: str
    exception_message: str


Status = Literal["completed", "failed", "cancelled", "timeout"]


class Answer(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    status: Status
    message: str
    output: list[OutputItem] = []
    timings: Timings = msgspec.field(default_factory=Timings)
    nodes: list[NodeInfo] = []
    prompt_id: str | None = None
    error: FailedNode | None = None  # where a failed workflow broke
    warnings: dict[str, Any] | None = None  # node_errors of branches ComfyUI dropped, though it ran the rest


class WebhookPayload(Answer, kw_only=True):
    """What the webhook receives: the answer plus the request's ``webhook.extra_params``."""

    extra: dict[str, Any] = {}
