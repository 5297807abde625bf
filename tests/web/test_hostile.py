"""Hostile requests, each refused with one clear line while the server goes on answering.

Paths in ids are tried on EVERY route of every page: the routes come from the page routers themselves, so a
page or action added later is covered (its path parameters and its JSON fields named like ids at once; a
POST route that reads its body itself must be listed in MANUAL or NO_BODY_IDS below, or this file fails).
"""

from __future__ import annotations

import base64
import importlib
import io
import typing
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import BaseModel

from ldm.web.app import create_app
from ldm.web.pages import PAGES
from ldm.web.settings import WebSettings

from .conftest import make_project
from .payloads import code_running_embedding

HOSTILE = ["../x", "..", "/etc/passwd", "a/../../b"]
# request fields that name a file, folder, run or model (free text such as prompts and captions is not here)
ID_FIELDS = {"file", "files", "run", "concept", "model", "snapshot", "snapshots", "image", "image_id", "init_id"}
ID_FIELDS |= {"grid_id", "out", "name", "source", "target"}
TOY = "toy-world/toy-world.safetensors"
# Valid ids in the module's project (see `project`), so a refusal is of the id under test and nothing else.
VALID = {
    "concept": "toy-purple-star",
    "run": "run1",
    "file": "a.pt",
    "files": ["a.pt", "b.pt"],
    "format": "paper",
    "model": TOY,
    "snapshot": "embeddings.pt",
    "snapshots": ["embeddings.pt"],
    "name": "w",
    "grid_id": "g1",
    "image_id": "x.png",
    "init_id": "x.png",
    "out": "new.pt",
}
PAGE_VALID = {  # where a page's field of the same name means something else
    "dataset": {"file": "star-purple-000.png", "files": ["star-purple-000.png"]},
    "train": {"name": "embeddings.pt"},
    "compare": {"name": "grid.png"},
}
# POST routes that parse their own body: (body kind, id fields, a body that is valid but for the id under test)
MANUAL = {
    "/api/train/start": (
        "form",
        ["model", "concept", "name"],
        {"model": TOY, "concept": "toy-purple-star", "name": "run1", "init_word": "shape", "learning_rate": "0.005"},
    ),
    "/api/generate/run": (
        "form",
        ["model", "run", "snapshot", "init_id"],
        {"model": TOY, "prompt": "a photo of a star", "steps": "1", "run": "r1", "snapshot": "embeddings.pt"},
    ),
    "/api/compare/run": (
        "json",
        ["model", "run", "snapshots"],
        {"model": TOY, "run": "r1", "snapshots": ["embeddings.pt"], "prompts": ["a photo of *"]},
    ),
    "/api/compare/use": ("json", ["run", "snapshot", "name"], {"run": "r1", "snapshot": "embeddings.pt", "name": "w"}),
}
# POST routes that read a body themselves but take no ids in it (their ids are path parameters, tried below)
NO_BODY_IDS = {
    "/api/dataset/{concept}/upload",
    "/api/train/runs/{run}/stop",
    "/api/train/runs/{run}/save",
    "/api/train/runs/{run}/resume",
    "/api/generate/stop",
    "/api/compare/stop",
}


def page_routes() -> list[APIRoute]:
    routes = []
    for name, _title in PAGES:
        router = importlib.import_module(f"ldm.web.pages.{name}").router
        routes += [r for r in router.routes if isinstance(r, APIRoute)]
    return routes


def _route_id(route: APIRoute) -> str:
    return f"{'/'.join(sorted(route.methods))} {route.path}"


def _encoded(value: str) -> str:
    """Every character that could end or climb out of a path segment, percent-encoded (dots too: a client
    would otherwise fold `..` away before sending)."""
    return quote(value, safe="").replace(".", "%2E")


def _valid(route: APIRoute, field: str):
    page = route.path.split("/")[2] if route.path.startswith("/api/") else ""
    return PAGE_VALID.get(page, {}).get(field, VALID.get(field))


def _dummy(annotation):
    """A plausible value for a field that is not under test."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (list, tuple, set):
        return [_dummy(args[0] if args else str)]
    if origin is typing.Literal:
        return typing.get_args(annotation)[0]
    if origin is not None and args:  # Optional / Union / Annotated
        return _dummy(args[0])
    return {bool: False, int: 1, float: 1.0, dict: {}}.get(annotation, "x")


def _body_model(route: APIRoute) -> type[BaseModel] | None:
    for param in route.dependant.body_params:
        annotation = param.field_info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
    return None


def _baseline(route: APIRoute, model: type[BaseModel]) -> dict:
    """A body that passes validation: valid ids for id fields, plausible values for the required rest."""
    body = {}
    for key, info in model.model_fields.items():
        valid = _valid(route, key)
        if valid is not None and (info.is_required() or key in ID_FIELDS):
            body[key] = valid
        elif info.is_required():
            body[key] = _dummy(info.annotation)
    return body


def _cases(route: APIRoute) -> list[tuple[str, str, dict | None]]:
    """(where, field, body) for each id the route takes: where is 'path', 'query', 'json' or 'form'; body is
    the rest of a valid request (None: the route takes no body)."""
    model = _body_model(route)
    body = _baseline(route, model) if model is not None else None
    kind = "json"
    if route.path in MANUAL:
        kind, _fields, body = MANUAL[route.path]
    cases = [("path", p.name, body) for p in route.dependant.path_params]
    cases += [("query", p.name, body) for p in route.dependant.query_params if p.name in ID_FIELDS]
    if model is not None:
        cases += [("json", k, body) for k in model.model_fields if k in ID_FIELDS]
    if route.path in MANUAL:
        cases += [(kind, field, body) for field in MANUAL[route.path][1]]
    return cases


def _request(client: TestClient, route: APIRoute, where: str, field: str, body: dict | None, value: str):
    method = sorted(route.methods)[0]
    path = route.path
    for param in route.dependant.path_params:
        hostile = where == "path" and param.name == field
        path = path.replace(f"{{{param.name}}}", _encoded(value) if hostile else _valid(route, param.name) or "x1")
    kind = MANUAL[route.path][0] if route.path in MANUAL else "json"
    if body is not None:
        body = dict(body)
        if where in ("json", "form"):
            valid = _valid(route, field)
            body[field] = [value, *valid] if isinstance(valid, list) else value
    if where == "query":
        return client.request(method, path, params={field: value})
    if body is None:
        return client.request(method, path)
    return client.request(method, path, data=body) if kind == "form" else client.request(method, path, json=body)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The toy project plus the ids VALID names: a run with an embedding and a preview, two library files."""
    import torch

    from ldm.embeddings import LoadedEmbedding, write_embedding_file

    root = make_project(tmp_path_factory.mktemp("hostile") / "project")
    run = root / "logs" / "run1"
    (run / "configs").mkdir(parents=True)
    (run / "images" / "train").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(run / "images" / "train" / "grid.png")
    for path, word in ((run / "checkpoints" / "embeddings.pt", "*"), (root / "embeddings" / "a.pt", "a")):
        write_embedding_file(path, LoadedEmbedding(word, torch.ones(1, 64), token=word))
    write_embedding_file(root / "embeddings" / "b.pt", LoadedEmbedding("b", torch.ones(1, 64), token="b"))
    return root


@pytest.fixture(scope="module")
def shared_client(project):
    # a captioning folder is named (never loaded: every request here is refused first) so that the caption
    # action gets as far as checking its concept id
    settings = WebSettings(root=project, extra_hosts=("testserver",), caption_model=project / "blip")
    with TestClient(create_app(settings)) as client:
        yield client


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _assert_alive(client: TestClient) -> None:
    assert client.get("/embeddings").status_code == 200


def _basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def _one_line(response) -> str:
    message = response.json()["error"]
    assert message and "\n" not in message and "Traceback" not in message
    return message


def test_every_post_route_that_reads_its_own_body_is_classified():
    unclassified = [
        _route_id(r)
        for r in page_routes()
        if "POST" in r.methods and not r.dependant.body_params and r.path not in MANUAL and r.path not in NO_BODY_IDS
    ]
    assert unclassified == [], "add these routes' id fields to MANUAL (or to NO_BODY_IDS) in this file"


def test_every_page_has_id_routes_under_test():
    tested = {r.path.split("/")[2] for r in page_routes() if r.path.startswith("/api/") and _cases(r)}
    assert tested >= {"embeddings"}  # the pages built so far; each page module adds its own on arrival
    assert len(tested) >= 2


@pytest.mark.parametrize("route", [r for r in page_routes() if _cases(r)], ids=_route_id)
def test_paths_in_ids_are_refused_everywhere(shared_client, project, route):
    outside = project.parent
    before = _tree(outside)
    for where, field, baseline in _cases(route):
        for value in HOSTILE:
            response = _request(shared_client, route, where, field, baseline, value)
            label = f"{_route_id(route)} {where} {field}={value!r}"
            assert response.status_code in (400, 404, 422), f"{label}: {response.status_code} {response.text}"
            message = _one_line(response)
            routed_away = response.status_code == 404 and message.startswith("no page or action at")
            assert routed_away or value in message, f"{label}: the refusal does not name the id: {message}"
    assert _tree(outside) == before  # nothing made, moved or deleted anywhere in or beside the project
    _assert_alive(shared_client)


def test_an_oversize_upload_is_refused(project):
    settings = WebSettings(root=project, extra_hosts=("testserver",), max_embedding_bytes=64, max_upload_bytes=4096)
    with TestClient(create_app(settings)) as client:
        one = client.post("/api/embeddings/upload", files=[("files", ("big.pt", b"x" * 65, "x/y"))])
        assert one.status_code == 413
        assert _one_line(one) == "embedding 'big.pt' is larger than 64 bytes; send a smaller file"
        total = client.post("/api/embeddings/upload", files=[("files", ("big.pt", b"x" * 5000, "x/y"))])
        assert total.status_code == 413
        assert _one_line(total).startswith("the upload is larger than 4096 bytes in all")
        _assert_alive(client)
    assert not (project / "embeddings" / "big.pt").exists()


def test_a_non_image_renamed_png_is_refused(shared_client, project):
    concept = project / "training_data" / "toy-purple-star"
    before = _tree(concept)
    fake = [("files", ("photo.png", b"MZ\x90\x00 this is a program, not a picture", "image/png"))]
    response = shared_client.post("/api/dataset/toy-purple-star/upload", files=fake)
    assert response.status_code == 400
    assert _one_line(response).startswith("'photo.png' is not an image")
    assert _tree(concept) == before
    _assert_alive(shared_client)


def test_a_code_running_pickle_embedding_is_refused_and_never_run(shared_client, project, tmp_path):
    marker = tmp_path / "marker"
    upload = [("files", ("evil.pt", code_running_embedding(marker), "application/octet-stream"))]
    response = shared_client.post("/api/embeddings/upload", files=upload)
    assert response.status_code == 400
    assert "not on the allow-list" in _one_line(response) and "'evil.pt' was refused" in _one_line(response)
    assert not marker.exists()
    assert not (project / "embeddings" / "evil.pt").exists()
    _assert_alive(shared_client)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:9090", "127.0.0.1.nip.io:9090", ""])
def test_a_foreign_host_is_refused(project, host):
    with TestClient(create_app(WebSettings(root=project)), base_url="http://127.0.0.1:9090") as client:
        response = client.get("/embeddings", headers={"host": host})
        assert response.status_code == 421
        assert _one_line(response) == f"Host {host!r} is not this server's; open http://127.0.0.1:9090/"
        _assert_alive(client)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"origin": "http://evil.example"}, "a request from 'http://evil.example' may not change this server"),
        ({"referer": "http://evil.example/page"}, "a request from 'http://evil.example/page' may not change"),
        ({"origin": "null"}, "a request from an opaque origin may not change this server"),
        ({"sec-fetch-site": "cross-site"}, "a request from another site may not change this server"),
    ],
)
def test_a_cross_site_post_is_refused(shared_client, project, headers, message):
    (project / "embeddings" / "keep.pt").write_bytes(b"x")
    response = shared_client.post("/api/embeddings/delete", json={"file": "keep.pt"}, headers=headers)
    assert response.status_code == 403
    assert _one_line(response).startswith(message)
    assert (project / "embeddings" / "keep.pt").exists()
    _assert_alive(shared_client)
    (project / "embeddings" / "keep.pt").unlink()


def test_a_same_origin_post_is_accepted(shared_client, project):
    (project / "embeddings" / "gone.pt").write_bytes(b"x")
    response = shared_client.post(
        "/api/embeddings/delete", json={"file": "gone.pt"}, headers={"origin": "http://testserver"}
    )
    assert response.json() == {"deleted": ["gone.pt"]}


@pytest.mark.parametrize(
    "authorization",
    [None, _basic("me:wrong"), "Basic !!!not-base64", "Bearer me:secret", _basic("mé:sécrét"), _basic("me")],
    ids=["missing", "wrong-password", "not-base64", "other-scheme", "non-ascii", "no-password"],
)
def test_auth_is_required_when_set(project, authorization):
    settings = WebSettings(root=project, extra_hosts=("testserver",), auth=("me", "secret"))
    with TestClient(create_app(settings)) as client:
        headers = {"authorization": authorization} if authorization else {}
        for method, url in (("GET", "/embeddings"), ("GET", "/static/app.js"), ("POST", "/api/embeddings/delete")):
            response = client.request(method, url, headers=headers)
            assert response.status_code == 401
            assert _one_line(response) == "log in with the user and password given to --auth"
            assert response.headers["www-authenticate"].startswith("Basic")
        assert client.get("/embeddings", auth=("me", "secret")).status_code == 200


def test_a_real_photo_upload_is_accepted(shared_client):
    """The refusals above are not a broken endpoint: a real photo goes in."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 40, 200)).save(buffer, "PNG")
    response = shared_client.post(
        "/api/dataset/toy-purple-star/upload", files=[("files", ("ok.png", buffer.getvalue(), "image/png"))]
    )
    assert response.status_code == 200, response.text


def test_every_response_forbids_foreign_scripts_and_framing(shared_client, project):
    """Pages, static files and refusals all carry the policy: only the server's own files run, nothing frames."""
    page, script = shared_client.get("/dataset"), shared_client.get("/static/app.js")
    refused = shared_client.get("/embeddings", headers={"host": "evil.example"})
    assert (page.status_code, script.status_code, refused.status_code) == (200, 200, 421)
    for response in (page, script, refused):
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
