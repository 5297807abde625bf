"""The Dataset page's captions: the grid view, one-by-one edits, batch tag edits, and "Caption with model"
with a tiny random BLIP (refused while a training run holds the machine, or when no model is configured)."""

from __future__ import annotations

from pathlib import Path

import pytest
from blip_helpers import WORDS, make_tiny_blip
from fastapi.testclient import TestClient
from PIL import Image

from ldm.data.captioning import Captioner
from ldm.web.app import create_app
from ldm.web.settings import WebSettings

from .conftest import TOY_CONCEPT

FILES = [f"star-purple-00{i}.png" for i in range(5)]


def _folder(web_root: Path) -> Path:
    return web_root / "training_data" / TOY_CONCEPT


def _caption_file(web_root: Path, file: str) -> Path:
    return _folder(web_root) / (Path(file).stem + ".txt")


def _error(response) -> str:
    text = response.json()["error"]
    assert "\n" not in text
    return text


def _view(client) -> dict[str, str]:
    return {item["file"]: item["caption"] for item in client.get(f"/api/dataset/{TOY_CONCEPT}/images").json()["images"]}


def test_the_view_has_every_image_with_its_caption_and_the_tag_counts(client, web_root):
    _caption_file(web_root, FILES[0]).write_text("a star,  purple\n")
    _caption_file(web_root, FILES[1]).write_text("purple, shape")
    view = client.get(f"/api/dataset/{TOY_CONCEPT}/images").json()
    assert [item["file"] for item in view["images"]] == FILES
    assert _view(client)[FILES[0]] == "a star, purple" and _view(client)[FILES[2]] == ""
    assert view["tags"][0] == ["purple", 2]
    assert sorted(view["tags"][1:]) == [["a star", 1], ["shape", 1]]


def test_edit_one_caption(client, web_root):
    url = f"/api/dataset/{TOY_CONCEPT}/caption"
    response = client.post(url, json={"file": FILES[3], "caption": "  a purple star,\nplain background "})
    assert response.status_code == 200
    assert response.json() == {"file": FILES[3], "caption": "a purple star, plain background"}
    assert _caption_file(web_root, FILES[3]).read_text() == "a purple star, plain background\n"
    assert _view(client)[FILES[3]] == "a purple star, plain background"
    assert not [p for p in _folder(web_root).iterdir() if p.name.startswith(".")]  # no temp file left


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"file": "missing.png", "caption": "x"}, 404, "not in concept"),
        ({"file": "../../outside.png", "caption": "x"}, 400, "plain name"),
        ({"file": FILES[0], "caption": "y" * 5000}, 400, "characters long"),
        ({"file": FILES[0]}, 422, "caption"),
    ],
)
def test_bad_caption_edits_are_refused_and_write_nothing(client, web_root, body, status, message):
    response = client.post(f"/api/dataset/{TOY_CONCEPT}/caption", json=body)
    assert response.status_code == status and message in _error(response)
    assert not list(web_root.rglob("*.txt"))


def test_batch_add_remove_replace_across_the_set(client, web_root):
    url = f"/api/dataset/{TOY_CONCEPT}/tags"
    _caption_file(web_root, FILES[0]).write_text("purple, star")
    response = client.post(url, json={"action": "add", "tag": "sks", "where": "front"})
    assert response.json() == {"changed": 5}
    assert _view(client)[FILES[0]] == "sks, purple, star" and _view(client)[FILES[4]] == "sks"
    assert client.post(url, json={"action": "replace", "tag": "purple", "new": "violet"}).json() == {"changed": 1}
    assert _view(client)[FILES[0]] == "sks, violet, star"
    assert client.post(url, json={"action": "remove", "tag": "sks"}).json() == {"changed": 5}
    assert _view(client) == {FILES[0]: "violet, star", **{f: "" for f in FILES[1:]}}


def test_batch_edit_of_the_ticked_images_only(client, web_root):
    url = f"/api/dataset/{TOY_CONCEPT}/tags"
    response = client.post(url, json={"action": "add", "tag": "night", "files": [FILES[1], FILES[2]]})
    assert response.json() == {"changed": 2}
    assert [f for f, caption in _view(client).items() if caption == "night"] == [FILES[1], FILES[2]]
    assert not _caption_file(web_root, FILES[0]).exists()


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"action": "rename", "tag": "x"}, 422, "action"),
        ({"action": "add", "tag": "a, b"}, 400, "comma"),
        ({"action": "add", "tag": " "}, 400, "empty"),
        ({"action": "replace", "tag": "x"}, 400, "replacement tag is empty"),
        ({"action": "add", "tag": "x", "where": "middle"}, 422, "where"),
        ({"action": "add", "tag": "x", "files": ["nope.png"]}, 404, "not in concept"),
        ({"action": "add", "tag": "x", "files": ["../x.png"]}, 400, "plain name"),
    ],
)
def test_bad_tag_edits_are_refused_and_write_nothing(client, web_root, body, status, message):
    response = client.post(f"/api/dataset/{TOY_CONCEPT}/tags", json=body)
    assert response.status_code == status and message in _error(response)
    assert not list(web_root.rglob("*.txt"))


def test_caption_with_model_without_a_configured_model_says_how(client):
    response = client.post(f"/api/dataset/{TOY_CONCEPT}/caption-model", json={})
    assert response.status_code == 409 and "--caption_model" in _error(response)


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory) -> Path:
    return make_tiny_blip(tmp_path_factory.mktemp("blip") / "tiny-blip")


@pytest.fixture
def blip_client(web_root, blip_dir):
    settings = WebSettings(root=web_root, extra_hosts=("testserver",), caption_model=blip_dir)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_caption_with_model_fills_the_missing_captions(blip_client, blip_dir, web_root):
    assert 'id="caption-model-run"' in blip_client.get("/dataset").text
    _caption_file(web_root, FILES[0]).write_text("kept by hand\n")
    url = f"/api/dataset/{TOY_CONCEPT}/caption-model"
    response = blip_client.post(url, json={})
    assert response.status_code == 200 and response.json() == {"captioned": 4}
    captioner = Captioner.load(blip_dir)
    expected = captioner.caption([Image.open(_folder(web_root) / f) for f in FILES])
    view = _view(blip_client)
    assert view[FILES[0]] == "kept by hand"
    for file, caption in zip(FILES[1:], expected[1:]):
        assert view[file] == caption and set(caption.split()) <= set(WORDS)
    response = blip_client.post(url, json={"overwrite": True})
    assert response.json() == {"captioned": 5} and _view(blip_client)[FILES[0]] == expected[0]


class _BusyTraining:
    def busy_message(self) -> str:
        return "a training run (toy) holds the machine"


def test_caption_with_model_waits_for_a_training_run(blip_client, web_root):
    blip_client.app.state.web.services["training"] = _BusyTraining()
    response = blip_client.post(f"/api/dataset/{TOY_CONCEPT}/caption-model", json={})
    assert response.status_code == 409 and "a training run (toy) holds the machine" in _error(response)
    assert not list(web_root.rglob("*.txt"))


def test_a_broken_caption_model_folder_is_one_line_and_the_server_goes_on(web_root, tmp_path):
    settings = WebSettings(root=web_root, extra_hosts=("testserver",), caption_model=tmp_path / "no-blip")
    with TestClient(create_app(settings)) as client:
        response = client.post(f"/api/dataset/{TOY_CONCEPT}/caption-model", json={})
        assert response.status_code == 400 and "no such folder" in _error(response)
        assert client.get("/dataset").status_code == 200
