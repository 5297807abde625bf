"""The Generate page on the toy world: generate, PNG recipe chunks, gallery, reuse, img2img, misfits, refusals."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.web.gen_helpers import TOY_MODEL, app_client, make_project, sdxl_term, term, wait_job, write_term

FAST = {"model": TOY_MODEL, "sampler": "ddim", "steps": "3", "cfg_scale": "5", "width": "32", "height": "32"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("generate") / "project")
    write_term(root / "embeddings" / "purple-thing.pt", term("purple-thing", seed=1))
    write_term(root / "embeddings" / "xl-cat.safetensors", sdxl_term("xl-cat"))
    return root


@pytest.fixture(scope="module")
def client(project):
    with app_client(project) as test_client:
        yield test_client


def generate(client, **fields) -> dict:
    response = client.post("/api/generate/run", data={**FAST, **fields})
    assert response.status_code == 200, response.text
    return wait_job(client, "generate")


def chunks(path) -> dict:
    with Image.open(path) as img:
        return dict(img.text)


def test_page_and_options(client):
    page = client.get("/generate")
    assert page.status_code == 200
    for element in ('id="gen-prompt"', 'id="gen-model"', 'id="gallery"', 'id="gen-run-button"', TOY_MODEL):
        assert element in page.text
    options = client.get("/api/generate/options").json()
    assert [m["id"] for m in options["models"]] == [TOY_MODEL]
    assert "k_euler_a" in [s["name"] for s in options["samplers"]]
    by_file = {e["file"]: e for e in options["embeddings"]}
    assert by_file["purple-thing.pt"]["words"] == ["purple-thing"]
    assert by_file["purple-thing.pt"]["width"] == 64
    assert "SDXL" in by_file["xl-cat.safetensors"]["family"]


def test_generate_writes_pngs_with_recipe_chunks(client, project):
    job = generate(client, prompt="a photo of a purple-thing [blurry]", negative_prompt="lowres", seed="7", images="2")
    assert job["state"] == "done", job
    assert job["done"] == job["total"] > 0
    first, second = job["result"]["images"]
    assert first.endswith(".7.png") and second.endswith(".8.png")  # image i uses seed + i, as invoke.py
    text = chunks(project / "outputs" / "web" / first)
    assert set(text) >= {"Dream", "sd-metadata", "parameters"}
    assert "-S 7" in text["Dream"] and "-s 3" in text["Dream"] and "[blurry, lowres]" in text["Dream"]
    meta = json.loads(text["sd-metadata"])
    assert meta["model_id"] == TOY_MODEL
    assert meta["image"]["embeddings"] == ["purple-thing"]
    assert meta["image"]["negative_prompt"] == "blurry, lowres"
    assert "Negative prompt: blurry, lowres" in text["parameters"]


def test_gallery_reuse_recipe_round_trip(client, project):
    job = generate(client, prompt="a photo of a (red:1.2) star", seed="123", sampler="k_euler", karras="true")
    (made,) = job["result"]["images"]
    gallery = client.get("/api/generate/gallery").json()["images"]
    assert gallery[0]["id"] == made  # newest first
    recipe = client.get(f"/api/generate/recipe/{made}").json()
    assert recipe["prompt"] == "a photo of a (red:1.2) star"
    assert (recipe["model"], recipe["seed"], recipe["steps"], recipe["sampler"]) == (TOY_MODEL, 123, 3, "k_euler")
    assert recipe["karras"] is True and (recipe["width"], recipe["height"]) == (32, 32)
    form = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in recipe.items() if v is not None}
    again = generate(client, **{k: form[k] for k in FAST | {"prompt": 0, "negative_prompt": 0, "seed": 0, "karras": 0}})
    (remade,) = again["result"]["images"]
    assert remade != made
    recipe_again = client.get(f"/api/generate/recipe/{remade}").json()
    assert {**recipe_again, "image": made, "command": ""} == {**recipe, "command": ""}
    assert recipe_again["command"] == recipe["command"]
    pixels = [np.asarray(Image.open(project / "outputs" / "web" / name)) for name in (made, remade)]
    assert np.array_equal(*pixels)  # the same recipe draws the same image


def test_download_and_missing_image(client):
    job = generate(client, prompt="a photo of a blue circle", seed="1")
    (made,) = job["result"]["images"]
    shown = client.get(f"/api/generate/image/{made}")
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
    assert "attachment" not in shown.headers.get("content-disposition", "")
    download = client.get(f"/api/generate/image/{made}?download=true")
    assert download.content == shown.content and "attachment" in download.headers["content-disposition"]
    missing = client.get("/api/generate/image/999999.1.png")
    assert missing.status_code == 404 and "no image" in missing.json()["error"]


def _png(color: tuple[int, int, int], size: int = 40) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_img2img_upload_and_reuse(client, project):
    files = {"init": ("start.png", _png((200, 30, 30)), "image/png")}
    response = client.post(
        "/api/generate/run", data={**FAST, "prompt": "a photo of a star", "seed": "3", "strength": "0.5"}, files=files
    )
    assert response.status_code == 200, response.text
    job = wait_job(client, "generate")
    assert job["state"] == "done", job
    (made,) = job["result"]["images"]
    recipe = client.get(f"/api/generate/recipe/{made}").json()
    assert recipe["init_id"] and recipe["strength"] == 0.5 and not recipe["init_missing"]
    assert f"-I outputs/web/init/{recipe['init_id']}" in recipe["command"]
    assert client.get(f"/api/generate/init/{recipe['init_id']}").status_code == 200
    again = generate(client, prompt=recipe["prompt"], seed="3", strength="0.5", init_id=recipe["init_id"])
    (remade,) = again["result"]["images"]
    pixels = [np.asarray(Image.open(project / "outputs" / "web" / name)) for name in (made, remade)]
    assert np.array_equal(*pixels)


def test_non_image_init_is_refused_and_nothing_is_stored(client, project):
    before = sorted((project / "outputs" / "web").rglob("*"))
    files = {"init": ("photo.png", b"#!/bin/sh\necho not an image\n", "image/png")}
    response = client.post("/api/generate/run", data={**FAST, "prompt": "a star"}, files=files)
    assert response.status_code == 400
    assert "'photo.png' is not an image" in response.json()["error"]
    assert sorted((project / "outputs" / "web").rglob("*")) == before


def test_sdxl_embedding_on_the_toy_model_is_the_library_error(client):
    job = generate(client, prompt="a photo of xl-cat", seed="1")
    assert job["state"] == "failed"
    assert "xl-cat.safetensors" in job["error"] and "2048 wide" in job["error"] and "SDXL" in job["error"]
    assert "\n" not in job["error"]


def test_wrong_width_snapshot_is_the_library_error(client, project):
    checkpoints = project / "logs" / "wide-run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    write_term(checkpoints / "embeddings_gs-5.pt", term("*", width=768))
    job = generate(client, prompt="a photo of *", run="wide-run", snapshot="embeddings_gs-5.pt")
    assert job["state"] == "failed"
    assert "768 wide" in job["error"] and "SD 1.x" in job["error"] and "takes 64" in job["error"]


def test_snapshot_word_draws_with_the_run_embedding(client, project):
    checkpoints = project / "logs" / "star-run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    write_term(checkpoints / "embeddings_gs-5.pt", term("*", seed=9))
    runs = client.get("/api/generate/options").json()["runs"]
    assert {"run": "star-run", "snapshots": [{"file": "embeddings_gs-5.pt", "step": 5}]} in runs
    job = generate(client, prompt="a photo of *", seed="5", run="star-run", snapshot="embeddings_gs-5.pt")
    assert job["state"] == "done", job
    (made,) = job["result"]["images"]
    plain = generate(client, prompt="a photo of *", seed="5")
    (without,) = plain["result"]["images"]
    pixels = [np.asarray(Image.open(project / "outputs" / "web" / name)) for name in (made, without)]
    assert not np.array_equal(*pixels)  # '*' is the snapshot's vector, not the plain character


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"model": "nope.safetensors"}, "model 'nope.safetensors'"),
        ({"model": "../models/toy-world/toy-world.safetensors"}, "pick one from the list"),
        ({"prompt": "  [only negative] "}, "prompt is empty"),
        ({"steps": "0"}, "steps 0"),
        ({"cfg_scale": "nan"}, "cfg_scale nan"),
        ({"width": "33"}, "width 33 is not a multiple of 8"),
        ({"height": "100000"}, "height 100000"),
        ({"sampler": "euler_magic"}, "unknown sampler 'euler_magic'"),
        ({"seed": "abc"}, "seed abc"),
        ({"images": "17"}, "images 17"),
        ({"run": "star-run"}, "run and snapshot go together"),
        ({"run": "../..", "snapshot": "embeddings.pt"}, "not a plain name"),
        ({"run": "star-run", "snapshot": "../../x.pt"}, "not a plain name"),
        ({"run": "star-run", "snapshot": "last.ckpt"}, "not an embeddings file"),
        ({"init_id": "../../etc/passwd"}, "not a plain name"),
        ({"init_id": "0123456789abcdef.png"}, "upload it again"),
    ],
)
def test_bad_fields_are_one_line_errors(client, fields, message):
    response = client.post("/api/generate/run", data={**FAST, "prompt": "a photo of a star", **fields})
    assert response.status_code in (400, 404), response.text
    error = response.json()["error"]
    assert message in error and "\n" not in error


@pytest.mark.parametrize("image_id", ["../secret.png", "..", "/etc/passwd", "a/../../b.png", "x.txt"])
def test_image_ids_never_leave_the_gallery(client, image_id):
    for url in (f"/api/generate/image/{image_id}", f"/api/generate/recipe/{image_id}"):
        response = client.get(url)
        assert response.status_code in (400, 404), (url, response.status_code)


class BusyTraining:
    def busy_message(self) -> str:
        return "a training run (toy-purple-star) is running"


def test_refused_while_training_runs(client):
    state = client.app.state.web
    state.services["training"] = BusyTraining()
    try:
        response = client.post("/api/generate/run", data={**FAST, "prompt": "a photo of a star"})
    finally:
        del state.services["training"]
    assert response.status_code == 409
    assert "training run (toy-purple-star) is running" in response.json()["error"]
    assert "Train page" in response.json()["error"]
