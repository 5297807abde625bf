"""The Embeddings page on the toy world: list, upload, download, convert, merge, delete, add a run's file."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from ldm.embeddings import LoadedEmbedding, read_embedding_file, write_embedding_file

from .payloads import code_running_embedding

TOY = "toy-world/toy-world.safetensors"
TOY_WIDTH = 64  # the toy world's text encoder


def _term(name: str, width: int = TOY_WIDTH, n: int = 2, seed: int = 0) -> LoadedEmbedding:
    vectors = torch.randn(n, width, generator=torch.Generator().manual_seed(seed))
    return LoadedEmbedding(name=name, vectors=vectors, token="*", step=7)


def _write(folder: Path, file: str, *terms: LoadedEmbedding) -> Path:
    return write_embedding_file(folder / file, list(terms))


def _bytes_of(*terms: LoadedEmbedding, suffix: str = ".pt") -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return _write(Path(tmp), f"x{suffix}", *terms).read_bytes()


def _library(client) -> dict:
    return {f["id"]: f for f in client.get("/api/embeddings/list").json()["library"]}


def _error(response, status: int) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert "\n" not in message and "Traceback" not in message
    return message


def test_the_library_lists_words_vectors_width_family_and_fitting_models(client, web_root):
    emb = web_root / "embeddings"
    _write(emb, "cat.pt", _term("cat"))
    _write(emb, "sd1.safetensors", _term("sd1", width=768, n=3))
    (emb / "broken.pt").write_bytes(b"not a pickle")
    (emb / ".hidden.pt").write_bytes(b"x")
    library = _library(client)
    assert sorted(library) == ["broken.pt", "cat.pt", "sd1.safetensors"]
    cat = library["cat.pt"]
    assert (cat["width"], cat["format"], cat["fits"], cat["family"]) == (TOY_WIDTH, "paper", [TOY], None)
    assert [(t["word"], t["vectors"], t["step"]) for t in cat["terms"]] == [("cat", 2, 7)]
    sd1 = library["sd1.safetensors"]
    assert (sd1["width"], sd1["family"], sd1["fits"]) == (768, "SD 1.x (CLIP ViT-L)", [])
    assert "not a readable embedding file" in library["broken.pt"]["error"]
    page = client.get("/embeddings")
    assert page.status_code == 200
    for text in ("cat.pt", "sd1.safetensors", "SD 1.x (CLIP ViT-L)", TOY, 'id="emb-library"', "unreadable"):
        assert text in page.text


def test_term_names_are_escaped_in_the_page(client, web_root):
    _write(web_root / "embeddings", "x.pt", _term("<script>alert(1)</script>"))
    page = client.get("/embeddings").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)" not in page


def test_upload_adds_files_that_read_back_identically(client, web_root):
    pt, st = _bytes_of(_term("cat")), _bytes_of(_term("dog", seed=1), suffix=".safetensors")
    files = [("files", ("cat.pt", pt, "application/octet-stream")), ("files", ("dog.safetensors", st, "x/y"))]
    response = client.post("/api/embeddings/upload", files=files)
    assert response.status_code == 200, response.text
    assert [f["id"] for f in response.json()["added"]] == ["cat.pt", "dog.safetensors"]
    assert (web_root / "embeddings" / "cat.pt").read_bytes() == pt
    read = read_embedding_file(web_root / "embeddings" / "dog.safetensors")[0]
    assert torch.equal(read.vectors, _term("dog", seed=1).vectors)
    again = client.post("/api/embeddings/upload", files=[("files", ("cat.pt", pt, "x/y"))])
    assert _error(again, 400) == "'cat.pt' is already in embeddings/; delete it first or rename the file"


def test_an_upload_batch_is_all_or_nothing(client, web_root):
    good = ("files", ("good.pt", _bytes_of(_term("good")), "x/y"))
    junk = ("files", ("junk.pt", b"\x80\x04junk", "x/y"))
    message = _error(client.post("/api/embeddings/upload", files=[good, junk]), 400)
    assert message.startswith("'junk.pt' was refused: it is not a readable embedding file")
    assert list((web_root / "embeddings").iterdir()) == []  # neither good.pt nor a staged temp file


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("notes.txt", "'notes.txt' is not an embedding file; upload one of .pt"),
        ("bad$name.pt", "file name 'bad$name.pt' is not a plain name"),
        (".hidden.pt", "file name '.hidden.pt' is not a plain name"),
    ],
)
def test_upload_refuses_other_suffixes_and_odd_names(client, web_root, name, message):
    response = client.post("/api/embeddings/upload", files=[("files", (name, _bytes_of(_term("a")), "x/y"))])
    assert _error(response, 400).startswith(message)
    assert list((web_root / "embeddings").iterdir()) == []


def test_a_code_running_pickle_is_refused_and_never_run(client, web_root, tmp_path):
    marker = tmp_path / "marker"
    upload = [("files", ("evil.pt", code_running_embedding(marker), "application/octet-stream"))]
    message = _error(client.post("/api/embeddings/upload", files=upload), 400)
    assert message.startswith("'evil.pt' was refused: refusing to load it: its pickle asks for 'getattr'")
    assert "not on the allow-list" in message
    assert not marker.exists()
    assert list((web_root / "embeddings").iterdir()) == []


def test_download_streams_the_file_by_id(client, web_root):
    path = _write(web_root / "embeddings", "cat.pt", _term("cat"))
    response = client.get("/api/embeddings/file/cat.pt")
    assert response.status_code == 200 and response.content == path.read_bytes()
    assert 'filename="cat.pt"' in response.headers["content-disposition"]
    assert _error(client.get("/api/embeddings/file/nope.pt"), 400).startswith("embedding 'nope.pt' is not in")


@pytest.mark.parametrize(
    ("fmt", "file"),
    [
        ("emb_params", "cat-emb_params.safetensors"),
        ("a1111-png", "cat-a1111-png.png"),
        ("diffusers", "cat-diffusers.bin"),
    ],
)
def test_convert_writes_a_new_file_with_the_same_vectors(client, web_root, fmt, file):
    _write(web_root / "embeddings", "cat.pt", _term("cat"))
    response = client.post("/api/embeddings/convert", json={"file": "cat.pt", "format": fmt})
    assert response.status_code == 200, response.text
    assert response.json()["added"][0]["id"] == file and response.json()["added"][0]["format"] == fmt
    assert torch.equal(read_embedding_file(web_root / "embeddings" / file)[0].vectors, _term("cat").vectors)
    download = client.get(f"/api/embeddings/file/{file}")
    assert download.content == (web_root / "embeddings" / file).read_bytes()


def test_convert_names_and_refusals(client, web_root):
    _write(web_root / "embeddings", "cat.pt", _term("cat"))
    named = client.post(
        "/api/embeddings/convert", json={"file": "cat.pt", "format": "paper", "out": "kitty", "name": "kitty"}
    )
    assert named.json()["added"][0]["terms"][0]["word"] == "kitty"
    taken = client.post("/api/embeddings/convert", json={"file": "cat.pt", "format": "paper", "out": "kitty.pt"})
    assert _error(taken, 400) == "new file 'kitty.pt' is already in embeddings/; pick another name"
    unknown = client.post("/api/embeddings/convert", json={"file": "cat.pt", "format": "jpeg"})
    assert _error(unknown, 400).startswith("format 'jpeg' is unknown; choose one of paper")


def test_merge_and_name_clashes(client, web_root):
    emb = web_root / "embeddings"
    _write(emb, "a.pt", _term("cat"))
    _write(emb, "b.pt", _term("dog", seed=1))
    _write(emb, "c.pt", _term("cat", seed=2))
    merged = client.post("/api/embeddings/merge", json={"files": ["a.pt", "b.pt"], "out": "both"})
    assert merged.status_code == 200, merged.text
    assert [t["word"] for t in merged.json()["added"][0]["terms"]] == ["cat", "dog"]
    assert merged.json()["added"][0]["id"] == "both.pt"
    clash = client.post("/api/embeddings/merge", json={"files": ["a.pt", "c.pt"], "out": "cats.pt"})
    assert "term 'cat' is in both" in _error(clash, 400)
    assert not (emb / "cats.pt").exists()
    renamed = client.post("/api/embeddings/merge", json={"files": ["a.pt", "c.pt"], "out": "cats.pt", "rename": True})
    assert [t["word"] for t in renamed.json()["added"][0]["terms"]] == ["cat", "cat-2"]
    one = client.post("/api/embeddings/merge", json={"files": ["a.pt", "a.pt"], "out": "x.pt"})
    assert _error(one, 400).startswith("merge needs at least two different files")


def test_delete_removes_the_file(client, web_root):
    path = _write(web_root / "embeddings", "cat.pt", _term("cat"))
    assert client.post("/api/embeddings/delete", json={"file": "cat.pt"}).json() == {"deleted": ["cat.pt"]}
    assert not path.exists()
    assert _error(client.post("/api/embeddings/delete", json={"file": "cat.pt"}), 400).startswith("embedding 'cat.pt'")


def test_a_runs_embedding_is_listed_downloaded_and_added(client, web_root):
    run = web_root / "logs" / "2026-12-03T10-00-00_star"
    path = _write(run / "checkpoints", "embeddings.pt", _term("*"))
    (web_root / "logs" / "no-embedding-yet" / "checkpoints").mkdir(parents=True)
    runs = client.get("/api/embeddings/list").json()["runs"]
    assert [(r["id"], r["fits"]) for r in runs] == [(run.name, [TOY])]
    assert client.get(f"/api/embeddings/run/{run.name}").content == path.read_bytes()
    added = client.post("/api/embeddings/add-run", json={"run": run.name, "out": "star"})
    assert added.status_code == 200, added.text
    assert (web_root / "embeddings" / "star.pt").read_bytes() == path.read_bytes()
    missing = client.post("/api/embeddings/add-run", json={"run": "no-embedding-yet"})
    assert _error(missing, 400).startswith("run 'no-embedding-yet' has no checkpoints/embeddings.pt yet")


def test_an_oversize_embedding_upload_is_413(web_root):
    from fastapi.testclient import TestClient

    from ldm.web.app import create_app
    from ldm.web.settings import WebSettings

    settings = WebSettings(root=web_root, extra_hosts=("testserver",), max_embedding_bytes=100)
    with TestClient(create_app(settings)) as client:
        data = io.BytesIO(_bytes_of(_term("big")))
        message = _error(client.post("/api/embeddings/upload", files=[("files", ("big.pt", data, "x/y"))]), 413)
        assert message == "embedding 'big.pt' is larger than 100 bytes; send a smaller file"
    assert list((web_root / "embeddings").iterdir()) == []


def _sdxl(name: str, seed: int = 0) -> LoadedEmbedding:
    from ldm.embeddings import SDXL

    vectors = torch.randn(2, 2048, generator=torch.Generator().manual_seed(seed))
    return LoadedEmbedding(name=name, vectors=vectors, token=name, format=SDXL, part_widths=(768, 1280))


def _unzip(data: bytes, folder: Path) -> list[str]:
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.extractall(folder)
        return sorted(archive.namelist())


def test_an_sdxl_file_downloads_as_diffusers_pair_with_the_same_rows(client, web_root, tmp_path):
    term = _sdxl("xlcat")
    _write(web_root / "embeddings", "xlcat.safetensors", term)
    assert _library(client)["xlcat.safetensors"]["sdxl"] is True
    page = client.get("/embeddings").text
    assert "/api/embeddings/pair/xlcat.safetensors" in page and 'data-sdxl="1"' in page
    response = client.get("/api/embeddings/pair/xlcat.safetensors")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert 'filename="xlcat-diffusers.zip"' in response.headers["content-disposition"]
    names = _unzip(response.content, tmp_path)
    assert names == ["learned_embeds.safetensors", "learned_embeds_2.safetensors"]
    from safetensors.torch import load_file

    first, second = load_file(tmp_path / names[0]), load_file(tmp_path / names[1])
    assert list(first) == list(second) == ["xlcat"]
    torch.testing.assert_close(first["xlcat"], term.vectors[:, :768], rtol=0, atol=0)
    torch.testing.assert_close(second["xlcat"], term.vectors[:, 768:], rtol=0, atol=0)
    assert sorted(p.name for p in (web_root / "embeddings").iterdir()) == ["xlcat.safetensors"]  # nothing added


def test_a_pair_in_the_library_downloads_as_both_files(client, web_root, tmp_path):
    emb = web_root / "embeddings"
    term = _sdxl("<xl>", seed=3)
    write_embedding_file(emb / "learned_embeds.safetensors", [term], format="diffusers")
    assert sorted(p.name for p in emb.iterdir()) == ["learned_embeds.safetensors", "learned_embeds_2.safetensors"]
    for url in ("/api/embeddings/file/learned_embeds.safetensors", "/api/embeddings/pair/learned_embeds.safetensors"):
        response = client.get(url)
        assert response.status_code == 200, response.text
        out = tmp_path / url.split("/")[3]
        names = _unzip(response.content, out)
        assert names == ["learned_embeds.safetensors", "learned_embeds_2.safetensors"]
        assert [(p.name, p.read_bytes()) for p in sorted(out.iterdir())] == [
            (p.name, p.read_bytes()) for p in sorted(emb.iterdir())
        ]


def test_pair_refusals_are_one_line(client, web_root):
    _write(web_root / "embeddings", "cat.pt", _term("cat"))
    _write(web_root / "embeddings", "xlcat.safetensors", _sdxl("xlcat"))
    message = _error(client.get("/api/embeddings/pair/cat.pt"), 400)
    assert "'cat.pt' is not an SDXL embedding" in message and "diffusers (.bin)" in message
    body = {"file": "xlcat.safetensors", "format": "diffusers"}
    message = _error(client.post("/api/embeddings/convert", json=body), 400)
    assert "diffusers pair (.zip)" in message
