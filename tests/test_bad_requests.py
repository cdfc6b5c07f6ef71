"""Bad bodies to POST /generate/sync: each gets a 400 (or 413) naming the field. Table-driven."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import steps_graph

OK_WF = steps_graph(1, seed=1)
T2I = "Text2Image"


def inp(**fields: Any) -> dict[str, Any]:
    return {"input": fields}


CASES: list[tuple[str, Any, str, str]] = [
    # (case, body, the path the answer must name, a word the error must contain)
    ("not json", b"{nope", "", "not valid JSON"),
    ("array body", b"[1, 2]", "$", "Expected `object`"),
    ("no input", {}, "$.input", "missing required field 'input'"),
    ("typo at top", {"inputs": {}}, "$.inputs", "unknown field 'inputs'"),
    ("input not object", {"input": "x"}, "$.input", "Expected `object`"),
    ("neither mode", inp(), "$.input", "give a modifier"),
    ("both modes", inp(modifier=T2I, workflow_json=OK_WF), "$.input", "not both"),
    ("modifications typo", inp(modifier=T2I, modifcations={}), "$.input.modifcations", "unknown field"),
    ("modifications without modifier", inp(workflow_json=OK_WF, modifications={"steps": 2}),
     "$.input.modifications", "go with a modifier"),
    ("unknown modifier", inp(modifier="Txt2Img"), "$.input.modifier", "known: Image2Image, RawWorkflow, Text2Image"),
    ("empty modifier", inp(modifier=""), "$.input.modifier", "length >= 1"),
    ("modifications not object", inp(modifier=T2I, modifications=[1]), "$.input.modifications", "Expected `object"),
    ("unknown modification", inp(modifier=T2I, modifications={"stpes": 2}), "$.input.modifications.stpes",
     "accepted: batch_size"),
    ("steps as string", inp(modifier=T2I, modifications={"steps": "20"}), "$.input.modifications.steps",
     "an integer from 1 to 10000"),
    ("steps zero", inp(modifier=T2I, modifications={"steps": 0}), "$.input.modifications.steps", "from 1 to 10000"),
    ("steps too many", inp(modifier=T2I, modifications={"steps": 10001}), "$.input.modifications.steps", "10000"),
    ("steps float", inp(modifier=T2I, modifications={"steps": 2.5}), "$.input.modifications.steps", "integer"),
    ("width bool", inp(modifier=T2I, modifications={"width": True}), "$.input.modifications.width", "integer"),
    ("width tiny", inp(modifier=T2I, modifications={"width": 8}), "$.input.modifications.width", "from 16"),
    ("cfg string", inp(modifier=T2I, modifications={"cfg": "high"}), "$.input.modifications.cfg", "a number"),
    ("denoise above 1", inp(modifier=T2I, modifications={"denoise": 1.5}), "$.input.modifications.denoise",
     "from 0 to 1"),
    ("negative seed", inp(modifier=T2I, modifications={"seed": -1}), "$.input.modifications.seed", "from 0"),
    ("prompt number", inp(modifier=T2I, modifications={"prompt": 5}), "$.input.modifications.prompt", "a string"),
    ("width on image2image", inp(modifier="Image2Image", modifications={"image": "aGVsbG8=", "width": 64}),
     "$.input.modifications.width", "does not apply"),
    ("image2image without image", inp(modifier="Image2Image", modifications={}), "$.input.modifications.image",
     "required"),
    ("image2image bad base64", inp(modifier="Image2Image", modifications={"image": "%%%"}),
     "$.input.modifications.image", "base64"),
    ("ui format", inp(workflow_json={"nodes": [], "links": [], "version": 0.4}), "$.input.workflow_json",
     "Export (API)"),
    ("empty workflow", inp(workflow_json={}), "$.input.workflow_json", "empty"),
    ("workflow array", inp(workflow_json=[1]), "$.input.workflow_json", "Expected `object"),
    ("node not object", inp(workflow_json={"3": 5}), '$.input.workflow_json["3"]', "class_type and inputs"),
    ("node without class_type", inp(workflow_json={"3": {"inputs": {}}}), '$.input.workflow_json["3"].class_type',
     "class_type"),
    ("inputs not object", inp(workflow_json={"3": {"class_type": "X", "inputs": [1]}}),
     '$.input.workflow_json["3"].inputs', "inputs"),
    ("unknown node class", inp(workflow_json={"1": {"class_type": "NoSuchNode", "inputs": {}}}),
     "$.input.workflow_json", "NoSuchNode"),
    ("comfy validation", inp(workflow_json=steps_graph(steps=0)), "$.input.workflow_json", "node 1 (PyworkerSteps)"),
    ("request_id with slash", inp(request_id="../etc", workflow_json=OK_WF), "$.input.request_id", "matching regex"),
    ("request_id empty", inp(request_id="", workflow_json=OK_WF), "$.input.request_id", "length >= 1"),
    ("request_id number", inp(request_id=67890, workflow_json=OK_WF), "$.input.request_id", "Expected `str"),
    ("s3 unknown field", inp(workflow_json=OK_WF, s3={"bucket": "b"}), "$.input.s3.bucket", "accepted: access_key_id"),
    ("s3 missing secret", inp(workflow_json=OK_WF, s3={"access_key_id": "a", "bucket_name": "bucket"}),
     "$.input.s3.secret_access_key", "missing required field"),
    ("s3 endpoint not a url", inp(workflow_json=OK_WF, s3={"access_key_id": "a", "secret_access_key": "s",
                                                        "bucket_name": "bucket", "endpoint_url": "minio:9000"}),
     "$.input.s3.endpoint_url", "http(s)://"),
    ("s3 region odd", inp(workflow_json=OK_WF, s3={"access_key_id": "a", "secret_access_key": "s",
                                                  "bucket_name": "bucket", "region": "US East"}),
     "$.input.s3.region", "matching regex"),
    ("webhook not object", inp(workflow_json=OK_WF, webhook="http://x"), "$.input.webhook", "Expected `object"),
    ("webhook bad url", inp(workflow_json=OK_WF, webhook={"url": "ftp://x"}), "$.input.webhook.url", "http(s)://"),
    ("webhook timeout zero", inp(workflow_json=OK_WF, webhook={"url": "http://x", "timeout": 0}),
     "$.input.webhook.timeout", "> 0"),
    ("webhook extra typo", inp(workflow_json=OK_WF, webhook={"url": "http://x", "extra": {}}),
     "$.input.webhook.extra", "accepted: url, extra_params"),
    ("base64 flag string", inp(workflow_json=OK_WF, return_outputs_as_base64="yes"),
     "$.input.return_outputs_as_base64", "Expected `bool`"),
    ("image without source", inp(workflow_json=OK_WF, images=[{"name": "a.png"}]), "$.input.images[0]",
     "exactly one of url or base64"),
    ("image both sources", inp(workflow_json=OK_WF, images=[{"name": "a.png", "url": "http://x/a",
                                                            "base64": "aGk="}]), "$.input.images[0]", "exactly one"),
    ("image name traversal", inp(workflow_json=OK_WF, images=[{"name": "../a.png", "base64": "aGk="}]),
     "$.input.images[0].name", "matching regex"),
    ("image url scheme", inp(workflow_json=OK_WF, images=[{"name": "a.png", "url": "file:///etc/passwd"}]),
     "$.input.images[0].url", "http(s)://"),
    ("image unknown field", inp(workflow_json=OK_WF, images=[{"name": "a.png", "path": "/x"}]),
     "$.input.images[0].path", "accepted: name, url, base64"),
]


@pytest.mark.parametrize(("case", "body", "path", "word"), CASES, ids=[c[0] for c in CASES])
async def test_bad_body(worker: TestClient[web.Request, web.Application], case: str, body: Any, path: str,
                        word: str) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body)
    resp = await worker.post("/generate/sync", data=data)
    answer = await resp.json()
    assert resp.status == 400, answer
    assert answer.get("path", "") == path, answer
    assert word in answer["error"], answer
    assert "Traceback" not in answer["error"]


def test_there_are_at_least_30_cases() -> None:
    assert len(CASES) >= 30
