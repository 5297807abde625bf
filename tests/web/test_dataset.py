"""The Dataset page: concept folders, photo uploads (checked, re-encoded, size-capped), images served by id,
deleting, preprocessing into a sibling concept; bad input refused with one line."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from ldm.web.app import create_app
from ldm.web.settings import WebSettings

from .conftest import REPO, TOY_CONCEPT

TOY_FILES = sorted((REPO / "training_data" / TOY_CONCEPT).glob("*.png"))


def _png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _pixels(data_or_path) -> np.ndarray:
    source = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    with Image.open(source) as image:
        return np.asarray(image.convert("RGB"))


def _upload(client, concept: str, files: list[tuple[str, bytes]]):
    parts = [("files", (name, data, "image/png")) for name, data in files]
    return client.post(f"/api/dataset/{concept}/upload", files=parts)


def _error(response) -> str:
    text = response.json()["error"]
    assert "\n" not in text and "Traceback" not in text
    return text


def test_the_page_lists_the_concepts_and_has_the_controls(client):
    html = client.get("/dataset").text
    for element in ("concept-select", "concept-create", "upload-files", "prep-run", "tags-apply", "dataset-grid"):
        assert f'id="{element}"' in html
    assert TOY_CONCEPT in html
    assert 'id="caption-model-run"' not in html  # no captioning model configured
    assert "/static/dataset.js" in html and client.get("/static/dataset.js").status_code == 200


def test_concepts_are_listed_with_counts_and_other_entries_are_not(client, web_root):
    (web_root / "training_data" / "README.md").write_text("not a concept")
    (web_root / "training_data" / ".hidden").mkdir()
    concepts = client.get("/api/dataset/concepts").json()["concepts"]
    assert concepts == [{"name": TOY_CONCEPT, "images": 5, "captioned": 0}]


def test_create_a_concept_then_the_same_name_again_is_refused(client, web_root):
    response = client.post("/api/dataset/concepts", json={"name": " my-cat "})
    assert response.status_code == 200 and response.json() == {"concept": "my-cat"}
    assert (web_root / "training_data" / "my-cat").is_dir()
    again = client.post("/api/dataset/concepts", json={"name": "my-cat"})
    assert again.status_code == 409 and "already exists" in _error(again)


@pytest.mark.parametrize("name", ["../escape", "..", "/etc/x", "a/b", ".hidden", "", "x" * 200, "bad\\name"])
def test_bad_concept_names_are_refused_and_nothing_is_made(client, web_root, name):
    before = sorted(p.name for p in web_root.rglob("*"))
    response = client.post("/api/dataset/concepts", json={"name": name})
    assert response.status_code == 400
    assert "concept" in _error(response) and "plain name" in _error(response)
    assert sorted(p.name for p in web_root.rglob("*")) == before


def test_upload_the_toy_photos_into_a_new_concept(client, web_root):
    client.post("/api/dataset/concepts", json={"name": "stars"})
    response = _upload(client, "stars", [(p.name, p.read_bytes()) for p in TOY_FILES])
    assert response.status_code == 200, response.text
    added = response.json()["added"]
    assert added == [p.name for p in TOY_FILES]
    folder = web_root / "training_data" / "stars"
    for original in TOY_FILES:
        assert np.array_equal(_pixels(folder / original.name), _pixels(original))  # same pixels, new file
    view = client.get("/api/dataset/stars/images").json()
    assert [item["file"] for item in view["images"]] == added
    concepts = client.get("/api/dataset/concepts").json()["concepts"]
    assert {"name": "stars", "images": 5, "captioned": 0} in concepts


def test_uploads_get_safe_png_names_and_never_overwrite(client, web_root):
    jpeg = _png_bytes(Image.new("RGB", (16, 12), (10, 200, 30)), "JPEG")
    png = _png_bytes(Image.new("RGB", (8, 8), (1, 2, 3)))
    response = _upload(client, TOY_CONCEPT, [("../../evil name!.jpg", jpeg), ("star-purple-000.png", png), ("", png)])
    assert response.status_code == 200, response.text
    assert response.json()["added"] == ["evil-name.png", "star-purple-000-2.png"]
    folder = web_root / "training_data" / TOY_CONCEPT
    assert Image.open(folder / "evil-name.png").format == "PNG"
    assert np.array_equal(_pixels(folder / "star-purple-000.png"), _pixels(TOY_FILES[0]))  # untouched
    assert not list(web_root.parent.glob("evil*"))


def test_a_non_image_renamed_png_stores_nothing_not_even_the_good_files(client, web_root):
    folder = web_root / "training_data" / TOY_CONCEPT
    before = sorted(p.name for p in folder.iterdir())
    good = TOY_FILES[0].read_bytes()
    response = _upload(client, TOY_CONCEPT, [("good.png", good), ("photo.png", b"#!/bin/sh\necho not a picture\n")])
    assert response.status_code == 400
    assert "'photo.png' is not an image" in _error(response)
    assert sorted(p.name for p in folder.iterdir()) == before


@pytest.fixture
def small_client(web_root):
    settings = WebSettings(root=web_root, extra_hosts=("testserver",), max_image_bytes=4000, max_upload_files=2)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_an_oversize_photo_is_refused_413(small_client, web_root):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    big = _png_bytes(Image.fromarray(noise))
    assert len(big) > 4000
    response = _upload(small_client, TOY_CONCEPT, [("big.png", big)])
    assert response.status_code == 413 and "'big.png' is larger than" in _error(response)
    assert not (web_root / "training_data" / TOY_CONCEPT / "big.png").exists()
    assert small_client.get("/dataset").status_code == 200  # the server goes on


def test_too_many_files_or_none_are_refused(small_client):
    png = _png_bytes(Image.new("RGB", (4, 4)))
    response = _upload(small_client, TOY_CONCEPT, [(f"p{i}.png", png) for i in range(3)])
    assert response.status_code == 400 and "at most 2" in _error(response)
    response = small_client.post(f"/api/dataset/{TOY_CONCEPT}/upload", data={"note": "no files"})
    assert response.status_code == 400 and "no photos" in _error(response)


def test_upload_into_a_missing_concept_is_404(client, web_root):
    response = _upload(client, "nobody", [("a.png", TOY_FILES[0].read_bytes())])
    assert response.status_code == 404 and "create it" in _error(response)
    assert not (web_root / "training_data" / "nobody").exists()


def test_images_are_served_by_id_only(client, web_root):
    response = client.get(f"/api/dataset/{TOY_CONCEPT}/image/{TOY_FILES[0].name}")
    assert response.status_code == 200 and response.content == TOY_FILES[0].read_bytes()
    assert response.headers["content-type"] == "image/png"
    (web_root / "training_data" / TOY_CONCEPT / "star-purple-000.txt").write_text("a caption")
    for concept, file, status in [
        (TOY_CONCEPT, "star-purple-000.txt", 404),  # a caption is not an image
        (TOY_CONCEPT, "missing.png", 404),
        (TOY_CONCEPT, "a..png", 400),
        (TOY_CONCEPT, ".hidden.png", 400),
        ("a..b", "star-purple-000.png", 400),
        ("nobody", "a.png", 404),
    ]:
        response = client.get(f"/api/dataset/{concept}/image/{file}")
        assert response.status_code == status, (concept, file, response.text)
        _error(response)


def test_a_symlink_out_of_the_data_root_is_refused(client, web_root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (4, 4)).save(outside / "secret.png")
    (web_root / "training_data" / "link").symlink_to(outside, target_is_directory=True)
    (web_root / "training_data" / TOY_CONCEPT / "leak.png").symlink_to(outside / "secret.png")
    for url in ("/api/dataset/link/images", f"/api/dataset/{TOY_CONCEPT}/image/leak.png"):
        response = client.get(url)
        assert response.status_code == 400 and "leaves its folder" in _error(response)


def test_delete_an_image_and_its_caption(client, web_root):
    folder = web_root / "training_data" / TOY_CONCEPT
    (folder / "star-purple-001.txt").write_text("caption")
    response = client.post(f"/api/dataset/{TOY_CONCEPT}/delete", json={"file": "star-purple-001.png"})
    assert response.status_code == 200
    assert not (folder / "star-purple-001.png").exists() and not (folder / "star-purple-001.txt").exists()
    assert len(list(folder.glob("*.png"))) == 4
    again = client.post(f"/api/dataset/{TOY_CONCEPT}/delete", json={"file": "star-purple-001.png"})
    assert again.status_code == 404
    outside = client.post(f"/api/dataset/{TOY_CONCEPT}/delete", json={"file": "../../models"})
    assert outside.status_code == 400 and (web_root / "models").exists()


def _prepared(web_root: Path, name: str) -> list[Path]:
    return sorted((web_root / "training_data" / name).glob("*.png"))


def test_preprocess_into_a_prepared_sibling_with_flips_and_captions(client, web_root):
    folder = web_root / "training_data" / TOY_CONCEPT
    (folder / "star-purple-002.txt").write_text("a purple star, shape")
    body = {"size": 64, "crop": "focus", "flip": True}
    response = client.post(f"/api/dataset/{TOY_CONCEPT}/preprocess", json=body)
    assert response.status_code == 200, response.text
    target = f"{TOY_CONCEPT}-prepared"
    assert response.json() == {"concept": target, "images": 10}
    images = _prepared(web_root, target)
    assert len(images) == 10 and all(Image.open(p).size == (64, 64) for p in images)
    assert (web_root / "training_data" / target / "star-purple-002-flipped.txt").read_text().strip() == (
        "a purple star, shape"
    )
    assert len(list(folder.glob("*.png"))) == 5  # the originals stay
    names = [c["name"] for c in client.get("/api/dataset/concepts").json()["concepts"]]
    assert target in names


def test_preprocess_again_needs_replace_and_then_replaces_the_whole_folder(client, web_root):
    url = f"/api/dataset/{TOY_CONCEPT}/preprocess"
    assert client.post(url, json={"size": 32, "flip": True}).status_code == 200
    again = client.post(url, json={"size": 48})
    assert again.status_code == 409 and "replace" in _error(again)
    assert len(_prepared(web_root, f"{TOY_CONCEPT}-prepared")) == 10
    replaced = client.post(url, json={"size": 48, "crop": "none", "replace": True})
    assert replaced.status_code == 200 and replaced.json()["images"] == 5
    images = _prepared(web_root, f"{TOY_CONCEPT}-prepared")
    assert len(images) == 5 and all(Image.open(p).size == (48, 48) for p in images)


def test_preprocess_into_a_named_target(client, web_root):
    response = client.post(f"/api/dataset/{TOY_CONCEPT}/preprocess", json={"size": 16, "target": "stars-16"})
    assert response.status_code == 200 and response.json()["concept"] == "stars-16"
    assert len(_prepared(web_root, "stars-16")) == 5


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"size": 0}, 422, "size"),
        ({"size": 64, "crop": "diagonal"}, 422, "crop"),
        ({"size": 64, "shape": "round"}, 422, "shape"),
        ({"size": 64, "target": TOY_CONCEPT}, 400, "the concept itself"),
        ({"size": 64, "target": "../outside"}, 400, "plain name"),
    ],
)
def test_bad_preprocess_requests_are_refused(client, web_root, body, status, message):
    response = client.post(f"/api/dataset/{TOY_CONCEPT}/preprocess", json=body)
    assert response.status_code == status and message in _error(response)
    assert sorted(p.name for p in (web_root / "training_data").iterdir()) == [TOY_CONCEPT]


def test_preprocess_an_empty_concept_says_upload_first(client):
    client.post("/api/dataset/concepts", json={"name": "empty"})
    response = client.post("/api/dataset/empty/preprocess", json={"size": 64})
    assert response.status_code == 400 and "upload photos first" in _error(response)
