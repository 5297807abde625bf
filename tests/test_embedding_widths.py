"""Embeddings of SD 2.x width (1024) read and write in every format of DESIGN.md, bit-exactly; a term of the
wrong width is refused (explicit file) or skipped (folder file) by a message naming its width and family."""

from __future__ import annotations

import logging

import pytest
import torch

from ldm.embeddings import (
    A1111_PNG,
    DIFFUSERS,
    EMB_PARAMS,
    PAPER,
    EmbeddingFileError,
    LoadedEmbedding,
    read_embedding_file,
    write_embedding_file,
)
from ldm.embeddings.families import check_width, family_of_width, width_and_family, width_mismatch
from ldm.embeddings.library import EmbeddingLibrary

SD1, SD2 = "SD 1.x (CLIP ViT-L)", "SD 2.x (OpenCLIP ViT-H)"


def vectors(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    """float32 values with long decimal forms and a wide range, so a lossy writer would show."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g) * torch.logspace(-5, 2, dim)


def term(name: str, n: int = 2, dim: int = 1024, seed: int = 0) -> LoadedEmbedding:
    return LoadedEmbedding(name, vectors(n, dim, seed), token="*", step=40, checkpoint="v2-1_512-ema-pruned")


def one_line(exc: pytest.ExceptionInfo, *needles: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    return msg


def test_widths_name_their_families():
    assert family_of_width(768) == SD1 and family_of_width(1024) == SD2
    assert "SDXL" in family_of_width(1280) and "SDXL" in family_of_width(2048)
    assert family_of_width(32) is None
    assert width_and_family(1024) == f"1024 wide for {SD2}" and width_and_family(32) == "32 wide"
    message = width_mismatch(768, 1024)
    assert message.index("768") < message.index(SD1) < message.index("1024") < message.index(SD2), message


FORMAT_CASES = [  # (file name, format argument, format read back)
    ("sd2word.pt", None, PAPER),
    ("sd2word.safetensors", None, EMB_PARAMS),
    ("learned_embeds.bin", None, DIFFUSERS),
    ("learned_embeds.safetensors", DIFFUSERS, DIFFUSERS),
    ("sd2word.png", None, A1111_PNG),
]


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("filename,fmt,read_fmt", FORMAT_CASES)
def test_width_1024_round_trips_in_every_format(tmp_path, filename, fmt, read_fmt, n):
    written = term("sd2word", n=n)
    path = write_embedding_file(tmp_path / filename, written, format=fmt)
    (back,) = read_embedding_file(path)
    assert back.format == read_fmt and back.dim == 1024 and back.num_vectors == n
    assert torch.equal(back.vectors.view(torch.int32), written.vectors.view(torch.int32))  # bit-exact
    if read_fmt != DIFFUSERS:  # the diffusers format stores only the vectors
        assert (back.step, back.checkpoint) == (40, "v2-1_512-ema-pruned")
    library = EmbeddingLibrary(1024, paths=[path])  # and an SD 2.x library takes it
    assert torch.equal(library.get(library.names()[0]).vectors, written.vectors)


@pytest.mark.parametrize("filename,fmt,_read", FORMAT_CASES)
def test_a_768_file_is_refused_by_an_sd2_library_naming_width_and_family(tmp_path, filename, fmt, _read):
    path = write_embedding_file(tmp_path / filename, term("sd1word", dim=768), format=fmt)
    with pytest.raises(EmbeddingFileError) as exc:
        EmbeddingLibrary(1024, paths=[path])
    message = one_line(exc, str(path), "768 wide", SD1, "takes 1024", SD2)
    assert message.startswith(str(path))


def test_a_1024_file_on_an_sd1_library_names_sd2(tmp_path):
    path = write_embedding_file(tmp_path / "sd2word.pt", term("sd2word"))
    with pytest.raises(EmbeddingFileError) as exc:
        EmbeddingLibrary(768, paths=[path])
    one_line(exc, str(path), "'sd2word'", "1024 wide", SD2, "takes 768", SD1)


def test_folder_files_of_the_wrong_width_are_skipped_with_a_warning_naming_them(tmp_path, caplog):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    write_embedding_file(folder / "good.safetensors", term("good"))
    write_embedding_file(folder / "old-sd1.pt", term("old", dim=768))
    write_embedding_file(folder / "learned_embeds.bin", term("<odd>", dim=40), format=DIFFUSERS)
    with caplog.at_level(logging.WARNING, logger="ldm.embeddings.library"):
        library = EmbeddingLibrary(1024, directory=folder)
    assert library.names() == ["good"] and sorted(library.skipped) == ["learned_embeds.bin", "old-sd1.pt"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    (sd1,) = [w for w in warnings if "old-sd1.pt" in w]
    assert "768 wide" in sd1 and SD1 in sd1 and SD2 in sd1 and sd1.count(str(folder / "old-sd1.pt")) == 1, sd1
    (odd,) = [w for w in warnings if "learned_embeds.bin" in w]
    assert "40 wide" in odd and "no known model family" in odd, odd
    assert "768 wide" in library.skipped["old-sd1.pt"]


def test_in_memory_terms_and_check_width(tmp_path):
    library = EmbeddingLibrary(1024)
    assert library.add(term("fits")) == "fits"
    with pytest.raises(EmbeddingFileError) as exc:
        library.add(term("sd1", dim=768))
    one_line(exc, "'sd1'", "768 wide", SD1, SD2)
    check_width([term("a"), term("b")], 1024, "here")  # no error when every term fits
    with pytest.raises(EmbeddingFileError) as exc:
        check_width([term("a"), term("b", dim=768)], 1024, "somewhere.pt")
    one_line(exc, "somewhere.pt: term 'b' is 768 wide")


def test_sdxl_file_on_sd2_and_mixed_width_merge_name_the_families(tmp_path):
    from safetensors.torch import save_file

    from ldm.embeddings.tools import merge_embeddings
    from ldm.errors import ConfigError

    sdxl = tmp_path / "xl.safetensors"
    save_file({"clip_l": vectors(1, 768), "clip_g": vectors(1, 1280)}, str(sdxl))
    (xl,) = read_embedding_file(sdxl)
    assert xl.dim == 2048 and xl.part_widths == (768, 1280)
    with pytest.raises(EmbeddingFileError) as exc:
        EmbeddingLibrary(1024, [sdxl])
    one_line(exc, str(sdxl), "2048 wide", "SDXL", SD2)
    a = write_embedding_file(tmp_path / "a.pt", term("a", dim=768))
    b = write_embedding_file(tmp_path / "b.pt", term("b"))
    with pytest.raises(ConfigError) as exc:
        merge_embeddings([a, b])
    one_line(exc, f"a.pt: 768 wide for {SD1}", f"b.pt: 1024 wide for {SD2}")
