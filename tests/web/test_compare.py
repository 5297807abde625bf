"""The Compare page on the toy world: runs and snapshots, the snapshots x prompts grid, using a snapshot."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.web.gen_helpers import TOY_MODEL, app_client, make_project, make_run, term, wait_job, write_term

FAST = {"model": TOY_MODEL, "sampler": "ddim", "steps": 2, "cfg_scale": 5, "width": 32, "height": 32, "seed": 11}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("compare") / "project")
    make_run(root, "toy-purple-star2026-12-03T10-00-00_toy-purple-star", steps=(5, 10))
    return root


RUN = "toy-purple-star2026-12-03T10-00-00_toy-purple-star"


@pytest.fixture(scope="module")
def client(project):
    with app_client(project) as test_client:
        yield test_client


def test_page_and_runs(client):
    page = client.get("/compare")
    assert page.status_code == 200
    for element in ('id="cmp-run"', 'id="cmp-prompts"', 'id="cmp-run-button"', 'id="cmp-table"', TOY_MODEL):
        assert element in page.text
    (run,) = client.get("/api/compare/runs").json()["runs"]
    assert run["run"] == RUN
    assert run["snapshots"] == [
        {"file": "embeddings_gs-5.pt", "step": 5},
        {"file": "embeddings_gs-10.pt", "step": 10},
        {"file": "embeddings.pt", "step": None},
    ]


def test_grid_of_snapshots_by_prompts(client, project):
    body = {
        **FAST,
        "run": RUN,
        "snapshots": ["embeddings_gs-5.pt", "embeddings_gs-10.pt", "embeddings.pt"],
        "prompts": ["a photo of *", "a photo of a red circle"],
    }
    response = client.post("/api/compare/run", json=body)
    assert response.status_code == 200, response.text
    job = wait_job(client, "compare")
    assert job["state"] == "done", job
    assert job["done"] == job["total"] > 0
    result = job["result"]
    assert [c["label"] for c in result["columns"]] == ["step 5", "step 10", "embeddings"]
    assert len(result["cells"]) == 2 and all(len(row) == 3 for row in result["cells"])

    def cell(r: int, c: int) -> np.ndarray:
        response = client.get(f"/api/compare/image/{result['grid']}/{result['cells'][r][c]}")
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        return np.asarray(Image.open(project / "outputs" / "web" / "compare" / result["grid"] / result["cells"][r][c]))

    # One seed: the row with '*' changes with the snapshot; the last step and embeddings.pt hold the same
    # vectors (one image); the row without '*' is the same in every column.
    assert not np.array_equal(cell(0, 0), cell(0, 1))
    assert np.array_equal(cell(0, 1), cell(0, 2))
    assert np.array_equal(cell(1, 0), cell(1, 1)) and np.array_equal(cell(1, 0), cell(1, 2))
    grid = client.get(f"/api/compare/image/{result['grid']}/grid.png?download=true")
    assert grid.status_code == 200 and "attachment" in grid.headers["content-disposition"]
    with Image.open(project / "outputs" / "web" / "compare" / result["grid"] / "grid.png") as sheet:
        assert sheet.width > 3 * 32 and sheet.height > 2 * 32  # labelled: margins around the cells
        assert json.loads(sheet.text["prompts"]) == body["prompts"] and sheet.text["seed"] == "11"


def test_use_snapshot_copies_it_under_the_chosen_word(client, project):
    response = client.post("/api/compare/use", json={"run": RUN, "snapshot": "embeddings_gs-5.pt", "name": "my-star"})
    assert response.status_code == 200, response.text
    assert response.json()["file"] == "my-star.pt" and response.json()["words"] == ["my-star"]
    options = client.get("/api/generate/options").json()
    assert "my-star" in [w for e in options["embeddings"] for w in e["words"]]
    from ldm.embeddings import read_embedding_file

    (copied,) = read_embedding_file(project / "embeddings" / "my-star.pt")
    (source,) = read_embedding_file(project / "logs" / RUN / "checkpoints" / "embeddings_gs-5.pt")
    assert copied.vectors.equal(source.vectors)
    again = client.post("/api/compare/use", json={"run": RUN, "snapshot": "embeddings_gs-10.pt", "name": "my-star"})
    assert again.status_code == 409 and "exists already" in again.json()["error"]
    (project / "embeddings" / "other.pt").unlink(missing_ok=True)
    write_term(project / "embeddings" / "other.pt", term("taken-word", seed=3))
    clash = client.post("/api/compare/use", json={"run": RUN, "snapshot": "embeddings_gs-10.pt", "name": "Taken-Word"})
    assert clash.status_code == 409 and "other.pt" in clash.json()["error"]


def test_wrong_width_snapshot_fails_before_the_first_cell(client, project):
    make_run(project, "wide-run", steps=(5,), width=768)
    response = client.post(
        "/api/compare/run", json={**FAST, "run": "wide-run", "snapshots": ["embeddings_gs-5.pt"], "prompts": ["*"]}
    )
    assert response.status_code == 200
    job = wait_job(client, "compare")
    assert job["state"] == "failed" and job["done"] == 0
    assert "768 wide" in job["error"] and "takes 64" in job["error"]
    assert not (project / "outputs" / "web" / "compare").exists() or all(
        (d / "grid.png").is_file() for d in (project / "outputs" / "web" / "compare").iterdir()
    )  # no half-written comparison


BASE = {**FAST, "run": RUN, "snapshots": ["embeddings_gs-5.pt"], "prompts": ["a photo of *"]}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"run": "../../etc"}, "not a plain name"),
        ({"run": "no-such-run"}, "has no snapshot"),
        ({"snapshots": []}, "pick 1 to"),
        ({"snapshots": ["../../../x.pt"]}, "not a plain name"),
        ({"snapshots": ["last.ckpt"]}, "not an embeddings file"),
        ({"snapshots": "embeddings.pt"}, "must be a list"),
        ({"prompts": [" "]}, "give 1 to"),
        ({"prompts": ["p"] * 9}, "give 1 to"),
        ({"model": "/etc/passwd"}, "pick one from the list"),
        ({"steps": 0}, "steps 0"),
        ({"seed": "x"}, "seed x"),
        ({"cfg_scale": "inf"}, "cfg_scale inf"),
        ({"width": 30}, "width 30 is not a multiple of 8"),
        ({"sampler": "nope"}, "unknown sampler"),
    ],
)
def test_bad_compare_requests(client, change, message):
    response = client.post("/api/compare/run", json={**BASE, **change})
    assert response.status_code in (400, 404), response.text
    assert message in response.json()["error"] and "\n" not in response.json()["error"]


@pytest.mark.parametrize(
    "body, message",
    [
        ({"run": RUN, "snapshot": "embeddings_gs-5.pt", "name": "../evil"}, "not a usable word"),
        ({"run": RUN, "snapshot": "embeddings_gs-5.pt", "name": ".hidden"}, "not a usable word"),
        ({"run": RUN, "snapshot": "embeddings_gs-5.pt", "name": None}, "not a usable word"),
        ({"run": RUN, "snapshot": "../../../models/toy-world/toy-world.safetensors", "name": "x"}, "not a plain name"),
        ({"run": "..", "snapshot": "embeddings.pt", "name": "x"}, "not a plain name"),
    ],
)
def test_bad_use_requests(client, project, body, message):
    before = sorted(p.name for p in (project / "embeddings").iterdir())
    response = client.post("/api/compare/use", json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert sorted(p.name for p in (project / "embeddings").iterdir()) == before


@pytest.mark.parametrize("path", ["../../x.png", "..%2F..%2Fsecret.png", "grid/../../../x.png", "g/cell.txt"])
def test_compare_images_never_leave_their_folder(client, path):
    response = client.get(f"/api/compare/image/{path}")
    assert response.status_code in (400, 404)


class BusyTraining:
    def busy_message(self) -> str:
        return "a training run is running"


def test_refused_while_training_runs(client):
    state = client.app.state.web
    state.services["training"] = BusyTraining()
    try:
        response = client.post("/api/compare/run", json=BASE)
    finally:
        del state.services["training"]
    assert response.status_code == 409 and "Train page" in response.json()["error"]


def test_not_json_is_one_line(client):
    response = client.post("/api/compare/run", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not JSON" in response.json()["error"]
