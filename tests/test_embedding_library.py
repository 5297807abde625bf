"""EmbeddingLibrary: naming rule (token / name field / stem, the `*` alias), explicit loads fail loudly,
folder scans skip bad files with a warning naming them, refresh is incremental, traversal is refused."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from ldm.embeddings import EmbeddingFileError, LoadedEmbedding, write_embedding_file
from ldm.embeddings import library as library_module
from ldm.embeddings.library import EmbeddingLibrary, prompt_name
from ldm.errors import ConfigError, LdmUserError

DIM = 32


def term(name: str, n: int = 2, dim: int = DIM, token: str = "*", seed: int = 0) -> LoadedEmbedding:
    g = torch.Generator().manual_seed(seed)
    return LoadedEmbedding(name, torch.randn(n, dim, generator=g), token=token)


def one_line(exc: pytest.ExceptionInfo, *needles: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    return msg


@pytest.fixture
def folder(tmp_path) -> Path:
    d = tmp_path / "embeddings"
    d.mkdir()
    write_embedding_file(d / "mycat.pt", term("mycat"))
    write_embedding_file(d / "sd2.pt", term("sd2", dim=1024))
    (d / "junk.pt").write_bytes(os.urandom(300))
    (d / "notes.txt").write_text("not an embedding")
    return d


def test_folder_scan_loads_good_files_and_skips_bad_ones_by_name(folder, caplog):
    with caplog.at_level(logging.WARNING, logger="ldm.embeddings.library"):
        lib = EmbeddingLibrary(DIM, directory=folder)
    assert lib.names() == ["mycat"] and "mycat" in lib and "MyCat" in lib and len(lib) == 1
    assert lib.get("mycat").num_vectors == 2
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "sd2.pt" in warned and "1024" in warned and "junk.pt" in warned and "notes.txt" not in warned
    assert sorted(lib.skipped) == ["junk.pt", "sd2.pt"]
    assert "*" not in lib  # folder terms never answer to "*"
    assert lib.describe() == [f"mycat: 2 vector(s), from {folder / 'mycat.pt'}"]


def test_missing_folder_is_empty_and_a_file_is_refused(tmp_path):
    assert EmbeddingLibrary(DIM, directory=tmp_path / "none").names() == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError) as exc:
        EmbeddingLibrary(DIM, directory=tmp_path / "f")
    one_line(exc, str(tmp_path / "f"))


def test_refresh_is_a_no_op_until_the_folder_changes_then_reads_only_what_changed(folder, monkeypatch):
    lib = EmbeddingLibrary(DIM, directory=folder)
    reads = []
    real = library_module.read_embedding_file
    monkeypatch.setattr(library_module, "read_embedding_file", lambda p: reads.append(Path(p).name) or real(p))
    version = lib.version
    assert lib.refresh() is False and lib.refresh() is False
    assert reads == [] and lib.version == version

    write_embedding_file(folder / "dog.safetensors", term("dog", seed=1))
    assert lib.refresh() is True
    assert reads == ["dog.safetensors"]  # the bad files are not re-read (nor re-warned) until they change
    assert lib.names() == ["dog", "mycat"] and lib.version > version

    write_embedding_file(folder / "mycat.pt", term("mycat", n=3, seed=2))
    os.utime(folder / "mycat.pt", ns=(1, 1))
    assert lib.refresh() is True and reads[-1] == "mycat.pt" and lib.get("mycat").num_vectors == 3
    (folder / "dog.safetensors").unlink()
    assert lib.refresh() is True and "dog" not in lib


def test_names_come_from_a_readable_token_else_the_name_field_else_the_stem(tmp_path):
    write_embedding_file(tmp_path / "learned_embeds.bin", term("<cat-toy>", token="<cat-toy>"), format="diffusers")
    write_embedding_file(tmp_path / "mycat.pt", term("mycat"))  # paper: token "*", name "mycat"
    write_embedding_file(tmp_path / "doggo.safetensors", term("ignored"))  # emb_params: only the stem
    torch.save(
        {"string_to_token": {"*": 265}, "string_to_param": {"*": torch.randn(1, DIM)}}, tmp_path / "paper-original.pt"
    )  # the paper code's files have no name field
    lib = EmbeddingLibrary(DIM, directory=tmp_path)
    assert sorted(lib.names()) == ["<cat-toy>", "doggo", "mycat", "paper-original"]
    assert prompt_name(LoadedEmbedding("stem", torch.zeros(1, DIM), token="sks")) == "sks"
    assert prompt_name(LoadedEmbedding("*", torch.zeros(1, DIM), token="*", source=Path("x/cat.pt"))) == "cat"


def test_star_names_the_single_explicit_paper_embedding(tmp_path, caplog):
    a = write_embedding_file(tmp_path / "mycat.pt", term("mycat", seed=1))
    lib = EmbeddingLibrary(DIM, paths=[a])
    assert "*" in lib and torch.equal(lib.get("*").vectors, lib.get("mycat").vectors)
    assert lib.canonical_name("*") == "mycat" and lib.names() == ["mycat"]
    assert set(lib.terms()) == {"mycat", "*"}
    assert lib.describe()[0].startswith("mycat (also '*'): 2 vector(s)")
    b = write_embedding_file(tmp_path / "dog.pt", term("dog", seed=2))
    with caplog.at_level(logging.WARNING, logger="ldm.embeddings.library"):
        lib.load(b)
    assert "*" not in lib and "ambiguous" in caplog.text and "mycat" in caplog.text and "dog" in caplog.text


def test_bad_explicit_paths_raise_one_line_naming_them(tmp_path):
    with pytest.raises(EmbeddingFileError) as exc:
        EmbeddingLibrary(DIM, paths=[tmp_path / "missing.pt"])
    one_line(exc, "missing.pt")
    wide = write_embedding_file(tmp_path / "sd2.pt", term("sd2", dim=1024))
    with pytest.raises(EmbeddingFileError) as exc:
        EmbeddingLibrary(DIM, paths=[wide])
    one_line(exc, "sd2.pt", "1024", str(DIM))
    (tmp_path / "a").mkdir()
    a = write_embedding_file(tmp_path / "a" / "mycat.pt", term("mycat"))
    b = write_embedding_file(tmp_path / "mycat.safetensors", term("x"))
    with pytest.raises(EmbeddingFileError) as exc:
        EmbeddingLibrary(DIM, paths=[a, b])
    one_line(exc, "mycat", str(a), str(b))
    assert issubclass(EmbeddingFileError, LdmUserError)


def test_explicit_terms_win_over_the_folder_and_the_same_file_is_not_doubled(folder, tmp_path, caplog):
    other = write_embedding_file(tmp_path / "elsewhere.pt", term("mycat", n=4, seed=3))
    with caplog.at_level(logging.WARNING, logger="ldm.embeddings.library"):
        lib = EmbeddingLibrary(DIM, paths=[other], directory=folder)
    assert lib.get("mycat").num_vectors == 4 and lib.names() == ["mycat"]
    assert "already used" in caplog.text and str(folder / "mycat.pt") in caplog.text
    caplog.clear()
    same = EmbeddingLibrary(DIM, paths=[folder / "mycat.pt"], directory=folder)
    assert same.names() == ["mycat"] and "already used" not in caplog.text and "*" in same


def test_load_by_name_loads_from_the_folder_and_refuses_escapes(folder, tmp_path):
    write_embedding_file(tmp_path / "secret.pt", term("secret"))
    write_embedding_file(folder / "toy.png", term("toy", seed=4))
    lib = EmbeddingLibrary(DIM, directory=folder)
    assert "toy" in lib  # PNG embeddings are scanned too
    assert lib.load_by_name("mycat") == ["mycat"] and "*" in lib  # asked for explicitly: "*" works
    assert lib.load_by_name("toy.png") == ["toy"]
    for bad in ["../secret", "..", "sub/mycat", "sub\\mycat", str(tmp_path / "secret"), "", "C:secret"]:
        with pytest.raises(EmbeddingFileError) as exc:
            lib.load_by_name(bad)
        one_line(exc, repr(bad))
    with pytest.raises(EmbeddingFileError) as exc:
        lib.load_by_name("nothere")
    one_line(exc, "'nothere'", str(folder))
    with pytest.raises(ConfigError) as exc:
        EmbeddingLibrary(DIM).load_by_name("mycat")
    one_line(exc, "'mycat'")


def test_add_in_memory_terms_and_get_unknown(tmp_path):
    lib = EmbeddingLibrary(DIM)
    assert lib.add(term("<my-cat>", token="<my-cat>")) == "<my-cat>"
    assert lib.describe() == ["<my-cat>: 2 vector(s), from memory"]
    with pytest.raises(EmbeddingFileError):
        lib.add(term("wide", dim=768))
    with pytest.raises(ConfigError) as exc:
        lib.get("nope")
    one_line(exc, "'nope'", "<my-cat>")
