"""Hostile input to the embedding tools and readers (issue 12): NaN/inf vectors are refused in every format and
by every reader (explicit files, the embeddings folder, EmbeddingManager.load, convert, merge); the file
system saying no (ENOSPC, EROFS, a file where a folder should be) is one line naming the path, exit 2, with
nothing left on disk."""

from __future__ import annotations

import base64
import copy
import errno
import json
import logging
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from sd_helpers import ROOT

from ldm.cli import run_cli
from ldm.embeddings import EmbeddingFileError, LoadedEmbedding, read_embedding_file, write_embedding_file
from ldm.embeddings.library import EmbeddingLibrary
from ldm.embeddings.png import CHUNK_KEY
from ldm.errors import LdmUserError
from ldm.fileio import atomic_path, save_png

DIM = 32  # the tiny text encoder's width


def broken(value: float, n: int = 2) -> torch.Tensor:
    v = torch.randn(n, DIM, generator=torch.Generator().manual_seed(1))
    v[n - 1, 5] = value
    return v


def _paper(path, v):
    torch.save({"string_to_param": {"*": v}, "name": "bad"}, path)


def _emb_params(path, v):
    save_file({"emb_params": v}, str(path))


def _diffusers(path, v):
    torch.save({"<bad>": v}, path)


def _bare_fp16(path, v):
    torch.save((v * 1e5).half(), path)  # overflows fp16: inf, as a careless conversion makes


def _png(path, v):
    data = {"string_to_param": {"*": {"TORCHTENSOR": v.tolist()}}, "name": "bad"}  # json writes NaN/Infinity
    text = base64.b64encode(json.dumps(data).encode()).decode()
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(CHUNK_KEY, text)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)


WRITERS = {"bad.pt": _paper, "bad.safetensors": _emb_params, "bad.bin": _diffusers, "bare.pt": _bare_fp16}
WRITERS["bad.png"] = _png


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("name", list(WRITERS))
def test_non_finite_vectors_are_refused_in_every_format(tmp_path, name, value):
    path = tmp_path / name
    WRITERS[name](path, broken(value))
    with pytest.raises(EmbeddingFileError) as err:
        read_embedding_file(path)
    message = str(err.value)
    assert str(path) in message and "NaN/inf" in message and "\n" not in message


def test_folder_skips_the_broken_file_with_a_warning_and_loads_the_rest(tmp_path, caplog):
    write_embedding_file(tmp_path / "good.pt", LoadedEmbedding("goodword", broken(0.5)))
    _paper(tmp_path / "nanword.pt", broken(float("nan")))
    with caplog.at_level(logging.WARNING):
        library = EmbeddingLibrary(DIM, directory=tmp_path)
    assert library.names() == ["goodword"]
    assert "nanword.pt" in caplog.text and "NaN/inf" in caplog.text
    assert "nanword.pt" in library.skipped


def test_explicit_file_and_in_memory_terms_are_refused(tmp_path):
    _diffusers(tmp_path / "bad.bin", broken(float("inf")))
    with pytest.raises(EmbeddingFileError, match="bad.bin"):
        EmbeddingLibrary(DIM, paths=[tmp_path / "bad.bin"])
    library = EmbeddingLibrary(DIM)
    with pytest.raises(EmbeddingFileError, match="NaN/inf"):
        library.add(LoadedEmbedding("x", broken(float("nan"))))
    assert len(library) == 0
    with pytest.raises(EmbeddingFileError, match="NaN/inf"):  # and nothing is written
        write_embedding_file(tmp_path / "out.pt", LoadedEmbedding("x", broken(float("nan"))))
    assert not (tmp_path / "out.pt").exists()


def test_generate_refuses_a_broken_embedding_path(tiny_model, tmp_path):
    from sd_helpers import TINY_CONFIG

    from ldm.generate import Generate

    _paper(tmp_path / "bad.pt", broken(float("nan")))
    gen = Generate(config=TINY_CONFIG, model=tiny_model, device="cpu", embedding_paths=[tmp_path / "bad.pt"])
    with pytest.raises(LdmUserError, match="bad.pt"):
        gen.txt2img("a photo of *", steps=2, width=64, height=64)


def test_embedding_manager_load_refuses_and_keeps_its_vectors(tiny_model, tmp_path):
    """--embedding_manager_ckpt goes through EmbeddingManager.load: a NaN file must not start training."""
    from ldm.modules.embedding_manager import EmbeddingManager

    manager = EmbeddingManager(copy.deepcopy(tiny_model.cond_stage_model), ["*"], ["sculpture"])
    before = manager.vectors("*").clone()
    _paper(tmp_path / "bad.pt", broken(float("nan"), n=1))
    with pytest.raises(EmbeddingFileError, match="bad.pt"):
        manager.load(tmp_path / "bad.pt")
    with pytest.raises(EmbeddingFileError, match="NaN/inf"):
        manager.load(LoadedEmbedding("*", broken(float("inf"), n=1), token="*"))
    assert torch.equal(manager.vectors("*"), before)


# -- the scripts ---------------------------------------------------------------------------------------------
def run_script(name: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, f"scripts/{name}", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_convert_and_merge_refuse_broken_files_and_write_nothing(tmp_path):
    good, bad = tmp_path / "good.pt", tmp_path / "bad.safetensors"
    write_embedding_file(good, LoadedEmbedding("goodword", broken(0.5)))
    _emb_params(bad, broken(float("nan")))
    line = one_line_error(run_script("convert_embedding.py", bad, tmp_path / "out.bin"))
    assert "bad.safetensors" in line and "NaN/inf" in line
    line = one_line_error(run_script("merge_embeddings.py", tmp_path / "merged.pt", good, bad))
    assert "bad.safetensors" in line and "NaN/inf" in line
    # OUT under a regular file: the OS says no (ENOTDIR/EEXIST), named in one line
    (tmp_path / "afile").write_text("x")
    line = one_line_error(run_script("convert_embedding.py", good, tmp_path / "afile" / "out.pt"))
    assert "afile" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "bad.safetensors", "good.pt"]


def test_training_refuses_a_nan_embedding_manager_ckpt_before_the_run_directory(tiny_ckpt, tmp_path):
    """main.py --embedding_manager_ckpt: never a NaN first training step; nothing is created."""
    from train_helpers import make_concept, run_main, train_args

    _paper(tmp_path / "nan.pt", broken(float("nan"), n=1))
    data = make_concept(tmp_path / "data", n=2)
    args = train_args(tiny_ckpt, data, tmp_path / "logs", 2, ("--embedding_manager_ckpt", str(tmp_path / "nan.pt")))
    result = run_main(args, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.stderr and len(errors) == 1, result.stderr
    assert "nan.pt" in errors[0] and "NaN/inf" in errors[0]
    assert not (tmp_path / "logs").exists()


# -- the file system says no -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "code, words",
    [(errno.ENOSPC, "disk space"), (errno.EROFS, "read-only"), (errno.EACCES, "permissions"), (errno.ENOTDIR, "file")],
)
def test_run_cli_turns_os_errors_into_one_line_naming_the_path(capsys, code, words):
    def body() -> int:
        raise OSError(code, "the OS says no", "/out/run/00001.png")

    assert run_cli(body) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: /out/run/00001.png: the OS says no; ")
    assert words in err


def test_failed_write_leaves_no_temp_file_and_no_new_folders(tmp_path, monkeypatch):
    def full_disk(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(fp))

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(OSError):
        save_png(Image.new("RGB", (8, 8)), tmp_path / "new" / "deeper" / "x.png")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(OSError), atomic_path(tmp_path / "kept" / "y.bin") as tmp:
        tmp.write_bytes(b"half")
        raise OSError(errno.EROFS, "Read-only file system", str(tmp))
    assert list(tmp_path.iterdir()) == [tmp_path / "kept"] and not list((tmp_path / "kept").iterdir())


def test_a_write_error_names_the_file_asked_for(tmp_path):
    """ENOSPC from a write carries no file name; the atomic writer adds the target's (not the temp file's)."""
    with pytest.raises(OSError) as err, atomic_path(tmp_path / "out.png"):
        fd = os.open("/dev/full", os.O_WRONLY)  # a real ENOSPC from the kernel (Linux); never O_CREAT in /dev
        try:
            os.write(fd, b"x" * 65536)
        finally:
            os.close(fd)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


def test_library_write_errors_on_a_full_disk_become_enospc(tmp_path, monkeypatch):
    """torch.save / safetensors report a full disk as RuntimeError; the atomic writer asks the disk."""
    import shutil

    from ldm import fileio

    def failing_write(path):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"part")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 896 vs 790")

    with pytest.raises(RuntimeError, match="enforce fail"):  # disk not full: a real bug stays a bug
        failing_write(tmp_path / "a.pt")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: usage._replace(free=4096))
    with pytest.raises(OSError) as err:
        failing_write(tmp_path / "sub" / "b.pt")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "sub" / "b.pt")
    assert list(tmp_path.iterdir()) == []
