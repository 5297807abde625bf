"""SDXL embedding files: one term [n, 768 + 1280] read from A1111/ComfyUI/kohya clip_l/clip_g files and from
diffusers' learned_embeds + learned_embeds_2 pair, written back in each layout bit-exactly; wrong widths,
half pairs and non-SDXL terms are one-line errors; the library lists a pair once and names SD 1.x files on
an SDXL model; convert/merge scripts handle the layouts."""

from __future__ import annotations

import base64
import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ldm.embeddings import (
    A1111_PNG,
    DIFFUSERS,
    SDXL,
    EmbeddingFileError,
    LoadedEmbedding,
    read_embedding_file,
    write_embedding_file,
)
from ldm.embeddings.library import EmbeddingLibrary
from ldm.errors import ConfigError

L, G = 768, 1280
REPO = Path(__file__).resolve().parents[1]


def vectors(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    """float32 values with long decimal forms and a wide range, so a lossy writer would show."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g) * torch.logspace(-5, 2, dim)


def xl_term(name: str = "xlcat", n: int = 2, seed: int = 0, widths=(L, G)) -> LoadedEmbedding:
    return LoadedEmbedding(name, vectors(n, sum(widths), seed), token="*", step=30, part_widths=widths)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.dtype == b.dtype == torch.float32
        and a.shape == b.shape
        and torch.equal(a.view(torch.int32), b.view(torch.int32))
    )


def one_line(exc: pytest.ExceptionInfo, *needles: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    return msg


# -- reading what other tools write -----------------------------------------------------------------------
@pytest.mark.parametrize("container", ["safetensors", "pt"])
def test_a1111_kohya_clip_files_read_as_one_term_named_by_the_stem(tmp_path, container):
    clip_l, clip_g = vectors(3, L, 1), vectors(3, G, 2)
    path = tmp_path / f"kohya-word.{container}"
    data = {"clip_g": clip_g, "clip_l": clip_l}  # kohya's order: clip_g first
    if container == "safetensors":
        save_file(data, str(path))
    else:
        torch.save({k: v.half() for k, v in data.items()}, path)  # fp16 pickles, as many shared files are
        clip_l, clip_g = clip_l.half().float(), clip_g.half().float()
    (term,) = read_embedding_file(path)
    assert term.name == "kohya-word" and term.token is None and term.format == SDXL
    assert term.part_widths == (L, G) and term.num_vectors == 3
    assert same_bits(term.vectors, torch.cat([clip_l, clip_g], dim=1))


def test_pivotal_tuning_keys_read_as_clip_l_and_clip_g(tmp_path):
    path = tmp_path / "pivotal_emb.safetensors"
    clip_l, clip_g = vectors(2, L, 8), vectors(2, G, 9)
    save_file({"text_encoders_0": clip_l, "text_encoders_1": clip_g}, str(path))
    (term,) = read_embedding_file(path)
    assert term.name == "pivotal_emb" and same_bits(term.vectors, torch.cat([clip_l, clip_g], dim=1))
    save_file({"text_encoders_0": clip_l, "text_encoders_1": vectors(2, 1024)}, str(path))
    with pytest.raises(EmbeddingFileError) as exc:
        read_embedding_file(path)
    one_line(exc, str(path), "'text_encoders_1' is 1024 wide", "clip_g")


def diffusers_pair_files(folder: Path, token: str, clip_l, clip_g, tail: str = "", suffix: str = ".safetensors"):
    """What diffusers' textual_inversion_sdxl.py writes: {token: [n, W]} twice, metadata format=pt."""
    folder.mkdir(parents=True, exist_ok=True)
    first, second = folder / f"learned_embeds{tail}{suffix}", folder / f"learned_embeds_2{tail}{suffix}"
    for path, tensor in ((first, clip_l), (second, clip_g)):
        if suffix == ".safetensors":
            save_file({token: tensor}, str(path), metadata={"format": "pt"})
        else:
            torch.save({token: tensor}, path)
    return first, second


@pytest.mark.parametrize("tail,suffix", [("", ".safetensors"), ("-steps-500", ".safetensors"), ("", ".bin")])
def test_diffusers_pair_reads_as_one_term_from_either_file_or_the_folder(tmp_path, tail, suffix):
    clip_l, clip_g = vectors(2, L, 3), vectors(2, G, 4)
    first, second = diffusers_pair_files(tmp_path / "run", "<cat-toy>", clip_l, clip_g, tail, suffix)
    targets = [first, second] + ([tmp_path / "run"] if not tail and suffix == ".safetensors" else [])
    for target in targets:
        (term,) = read_embedding_file(target)
        assert term.name == term.token == "<cat-toy>" and term.format == DIFFUSERS, target
        assert term.part_widths == (L, G) and term.source == first
        assert same_bits(term.vectors, torch.cat([clip_l, clip_g], dim=1))


def test_half_pairs(tmp_path):
    clip_l, clip_g = vectors(1, L), vectors(1, G)
    first, second = diffusers_pair_files(tmp_path, "<x>", clip_l, clip_g)
    first.unlink()
    with pytest.raises(EmbeddingFileError) as exc:
        read_embedding_file(second)
    one_line(exc, str(second), "learned_embeds.safetensors", "text_encoder_2")
    # The first file alone is what the SD 1.x example writes: a one-encoder term.
    alone = tmp_path / "sd1"
    diffusers_pair_files(alone, "<y>", clip_l, clip_g)
    (alone / "learned_embeds_2.safetensors").unlink()
    (term,) = read_embedding_file(alone / "learned_embeds.safetensors")
    assert term.dim == L and term.part_widths is None


@pytest.mark.parametrize(
    "halves,needles",
    [
        ({"clip_l": vectors(1, L), "clip_g": vectors(1, 1024)}, ["'clip_g' is 1024 wide", "1280", "ViT-bigG"]),
        ({"clip_l": vectors(1, 1024), "clip_g": vectors(1, G)}, ["'clip_l' is 1024 wide", "768"]),
        ({"clip_l": vectors(1, G), "clip_g": vectors(1, L)}, ["'clip_l' is 1280 wide", "768"]),
        ({"clip_l": vectors(2, L), "clip_g": vectors(1, G)}, ["2 vector(s)", "'clip_g' has 1"]),
    ],
    ids=["clip_g-1024", "clip_l-1024", "swapped", "counts"],
)
def test_bad_sdxl_files_are_one_line_naming_file_key_and_width(tmp_path, halves, needles):
    path = tmp_path / "broken.safetensors"
    save_file(halves, str(path))
    with pytest.raises(EmbeddingFileError) as exc:
        read_embedding_file(path)
    one_line(exc, str(path), *needles)


def test_bad_pairs_name_both_files(tmp_path):
    first, _ = diffusers_pair_files(tmp_path / "a", "<x>", vectors(1, L), vectors(1, 1024))
    with pytest.raises(EmbeddingFileError) as exc:
        read_embedding_file(first)
    one_line(exc, str(first), "learned_embeds_2.safetensors[<x>]", "1024 wide", "1280")
    first, _ = diffusers_pair_files(tmp_path / "b", "<x>", vectors(1, L), vectors(1, G))
    save_file({"<y>": vectors(1, G)}, str(tmp_path / "b" / "learned_embeds_2.safetensors"))
    with pytest.raises(EmbeddingFileError) as exc:
        read_embedding_file(first)
    one_line(exc, str(first), "different tokens", "'<x>'", "'<y>'")


def test_small_sdxl_shaped_halves_are_read(tmp_path):
    """The toy XL world and test models have narrow encoders: any pair without a real SDXL width reads."""
    path = tmp_path / "toy.safetensors"
    save_file({"clip_l": vectors(2, 32), "clip_g": vectors(2, 64)}, str(path))
    (term,) = read_embedding_file(path)
    assert term.dim == 96 and term.part_widths == (32, 64)


# -- writing ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("filename", ["xlcat.safetensors", "xlcat.pt", "xlcat.bin", "xlcat.png"])
def test_sdxl_files_round_trip_bit_exactly_in_the_shared_layout(tmp_path, filename):
    term = xl_term()
    path = write_embedding_file(tmp_path / filename, term)
    (back,) = read_embedding_file(path)
    assert same_bits(back.vectors, term.vectors) and back.part_widths == (L, G)
    halves = {"clip_l": term.vectors[:, :L], "clip_g": term.vectors[:, L:]}
    if filename.endswith(".safetensors"):
        stored = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
        assert metadata["name"] == "xlcat" and metadata["step"] == "30" and metadata["token"] == "*"
        assert back.name == "xlcat" and back.step == 30 and back.token == "*" and back.format == SDXL
    elif filename.endswith(".png"):
        from PIL import Image

        with Image.open(path) as img:
            payload = json.loads(base64.b64decode(img.text["sd-ti-embedding"]))
        assert set(payload) == {"clip_l", "clip_g"}  # A1111 detaches every value: tensors only
        stored = {k: torch.tensor(v["TORCHTENSOR"], dtype=torch.float64).float() for k, v in payload.items()}
        assert back.format == A1111_PNG and back.name == "xlcat"
    else:
        stored = torch.load(path, weights_only=True)  # a plain dict of two tensors, nothing else
        assert back.name == "xlcat" and back.format == SDXL
    assert set(stored) == {"clip_l", "clip_g"}
    for key in halves:
        assert same_bits(stored[key], halves[key].contiguous())


@pytest.mark.parametrize("out", ["pairdir", "pairdir/learned_embeds.safetensors", "pairdir/learned_embeds.bin"])
def test_diffusers_pair_is_written_as_the_sdxl_example_writes_it(tmp_path, out):
    terms = [xl_term("<a>", n=1, seed=1), xl_term("<b>", n=3, seed=2)]
    first = write_embedding_file(tmp_path / out, terms, format=DIFFUSERS)
    suffix = ".bin" if out.endswith(".bin") else ".safetensors"
    assert first == tmp_path / "pairdir" / f"learned_embeds{suffix}"
    second = first.with_name(f"learned_embeds_2{suffix}")
    load = (lambda p: load_file(str(p))) if suffix == ".safetensors" else (lambda p: torch.load(p, weights_only=True))
    for path, cols in ((first, slice(0, L)), (second, slice(L, None))):
        stored = load(path)
        assert list(stored) == ["<a>", "<b>"]
        for t in terms:
            assert same_bits(stored[t.name], t.vectors[:, cols].contiguous())
    back = read_embedding_file(tmp_path / "pairdir")
    assert [t.name for t in back] == ["<a>", "<b>"]
    assert all(same_bits(b.vectors, t.vectors) for b, t in zip(back, terms))


def test_default_formats_of_an_sdxl_term(tmp_path):
    term = xl_term()
    assert write_embedding_file(tmp_path / "out", term) == tmp_path / "out" / "learned_embeds.safetensors"
    assert read_embedding_file(tmp_path / "out")[0].format == DIFFUSERS
    (back,) = read_embedding_file(write_embedding_file(tmp_path / "x.safetensors", term))
    assert back.format == SDXL


@pytest.mark.parametrize(
    "make,needles",
    [
        (lambda d: write_embedding_file(d / "a.pt", xl_term(), format="paper"), ["paper", "clip_l + clip_g"]),
        (lambda d: write_embedding_file(d / "a.safetensors", xl_term(), format="emb_params"), ["emb_params"]),
        (lambda d: write_embedding_file(d / "a.safetensors", [xl_term("a"), xl_term("b")]), ["one term", "got 2"]),
        (lambda d: write_embedding_file(d / "cat.safetensors", xl_term(), format="diffusers"), ["learned_embeds_2"]),
        (lambda d: write_embedding_file(d / "a.txt", xl_term()), ["'.txt'", "sdxl"]),
        (
            lambda d: write_embedding_file(d / "a.safetensors", LoadedEmbedding("sd1", vectors(1, L)), format="sdxl"),
            ["'sd1'", "768 wide for SD 1.x", "not an SDXL term"],
        ),
    ],
    ids=["paper", "emb_params", "two-terms", "pair-name", "suffix", "sd1-as-sdxl"],
)
def test_unwritable_combinations_are_one_line_and_write_nothing(tmp_path, make, needles):
    with pytest.raises(ConfigError) as exc:
        make(tmp_path)
    one_line(exc, *needles)
    assert list(tmp_path.iterdir()) == []


# -- the library ------------------------------------------------------------------------------------------
def test_sdxl_library_lists_a_pair_once_and_skips_sd1_files_naming_the_family(tmp_path, caplog):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    write_embedding_file(folder / "xlcat.safetensors", xl_term("xlcat"))
    diffusers_pair_files(folder, "<toy>", vectors(1, L, 5), vectors(1, G, 6))
    write_embedding_file(folder / "old-sd1.pt", LoadedEmbedding("old", vectors(1, L)))
    caplog.set_level(logging.WARNING)
    library = EmbeddingLibrary(L + G, directory=folder, part_widths=(L, G))
    assert sorted(library.names()) == ["<toy>", "xlcat"]
    assert library.get("<toy>").part_widths == (L, G)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    (sd1,) = warnings
    assert "old-sd1.pt" in sd1 and "768 wide" in sd1 and "SD 1.x" in sd1 and "SDXL model" in sd1, sd1

    # A lone second file is skipped naming its missing first half; a first file arriving completes the pair.
    lone = tmp_path / "lone"
    diffusers_pair_files(lone, "<half>", vectors(1, L), vectors(1, G))
    (lone / "learned_embeds.safetensors").rename(tmp_path / "kept.safetensors")
    caplog.clear()
    half = EmbeddingLibrary(L + G, directory=lone)
    assert half.names() == [] and "learned_embeds.safetensors" in half.skipped["learned_embeds_2.safetensors"]
    (tmp_path / "kept.safetensors").rename(lone / "learned_embeds.safetensors")
    assert half.refresh() and half.names() == ["<half>"] and half.skipped == {}

    # A change to the pair's second file re-reads the pair.
    new_g = vectors(1, G, 7)
    save_file({"<toy>": new_g}, str(folder / "learned_embeds_2.safetensors"), metadata={"format": "pt"})
    assert library.refresh()
    assert same_bits(library.get("<toy>").vectors[:, L:], new_g)


def test_sdxl_library_refuses_explicit_sd1_files_and_loads_pairs_once(tmp_path):
    sd1 = write_embedding_file(tmp_path / "mycat.pt", LoadedEmbedding("mycat", vectors(1, L)))
    with pytest.raises(EmbeddingFileError) as exc:
        EmbeddingLibrary(L + G, [sd1])
    one_line(exc, str(sd1), "768 wide", "SD 1.x", "SDXL model", "clip_l 768 + clip_g 1280")
    first, second = diffusers_pair_files(tmp_path / "pair", "<p>", vectors(1, L), vectors(1, G))
    library = EmbeddingLibrary(L + G, [first, second])  # both files of the pair: one source, no clash
    assert library.names() == ["<p>"]


def test_small_sdxl_library_checks_where_terms_split(tmp_path):
    path = tmp_path / "swapped.safetensors"
    save_file({"clip_l": vectors(1, 64), "clip_g": vectors(1, 32)}, str(path))
    with pytest.raises(EmbeddingFileError) as exc:
        EmbeddingLibrary(96, [path], part_widths=(32, 64))
    one_line(exc, str(path), "clip_l 64 + clip_g 32", "clip_l 32 + clip_g 64")


# -- convert and merge ------------------------------------------------------------------------------------
def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_convert_between_the_sdxl_layouts_bit_exactly(tmp_path, capsys):
    convert = _script("convert_embedding")
    term = xl_term("xlcat", n=3)
    src = write_embedding_file(tmp_path / "xlcat.safetensors", term)
    assert convert([str(src), str(tmp_path / "pair"), "--to", "diffusers"]) == 0
    assert convert([str(tmp_path / "pair" / "learned_embeds_2.safetensors"), str(tmp_path / "back.pt")]) == 0
    assert convert([str(tmp_path / "back.pt"), str(tmp_path / "card.png")]) == 0
    assert convert([str(tmp_path / "card.png"), str(tmp_path / "again.safetensors")]) == 0
    for out in ("pair", "back.pt", "card.png", "again.safetensors"):
        (back,) = read_embedding_file(tmp_path / out)
        assert same_bits(back.vectors, term.vectors), out
    assert "learned_embeds.safetensors (diffusers)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,needles",
    [
        (["{sd1}", "{d}/x.safetensors", "--to", "sdxl"], ["768 wide for SD 1.x", "not an SDXL term"]),
        (["{xl}", "{d}/x.pt", "--to", "paper"], ["paper", "clip_l + clip_g"]),
        (["{xl}", "{d}/x.safetensors", "--to", "diffusers"], ["learned_embeds.safetensors"]),
        (["{sd1}", "{d}/folder"], ["folder", "SDXL pair"]),
        (["{pair}", "{d}/pair", "--to", "diffusers"], ["overwrite the input"]),
    ],
    ids=["sd1-to-sdxl", "xl-to-paper", "pair-bad-name", "sd1-to-folder", "pair-onto-itself"],
)
def test_convert_refusals_are_one_error_line(tmp_path, capsys, args, needles):
    convert = _script("convert_embedding")
    files = {
        "sd1": write_embedding_file(tmp_path / "sd1.pt", LoadedEmbedding("sd1", vectors(1, L))),
        "xl": write_embedding_file(tmp_path / "xl.safetensors", xl_term()),
        "pair": write_embedding_file(tmp_path / "pair", xl_term("<p>"), format=DIFFUSERS),
        "d": tmp_path,
    }
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert convert([a.format(**files) for a in args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and all(n in lines[0] for n in needles), lines
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_merge_sdxl_terms_into_the_diffusers_pair(tmp_path, capsys):
    merge = _script("merge_embeddings")
    a = write_embedding_file(tmp_path / "a.safetensors", xl_term("*", seed=1))
    b = write_embedding_file(tmp_path / "b.safetensors", xl_term("*", seed=2))
    assert merge([str(tmp_path / "merged"), str(a), str(b), "--rename"]) == 0
    back = read_embedding_file(tmp_path / "merged")
    assert [t.name for t in back] == ["*", "*-2"]
    assert same_bits(back[1].vectors, xl_term(seed=2).vectors)
    assert merge([str(tmp_path / "m.safetensors"), str(a), str(b), "--rename"]) == 2
    assert "diffusers' pair" in capsys.readouterr().err
