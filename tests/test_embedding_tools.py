"""The embedding tools as a user runs them (real subprocesses): convert_embedding.py (bit-exact across
every format), merge_embeddings.py (clashes, --rename), compare_embeddings.py (a labelled snapshot grid on
the tiny model) and evaluate.py clip (the paper's CLIP metrics with a tiny random CLIP model)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ldm.embeddings import (
    A1111_PNG,
    DIFFUSERS,
    EMB_PARAMS,
    PAPER,
    LoadedEmbedding,
    read_embedding_file,
    write_embedding_file,
)
from ldm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
FINETUNE = ROOT / "tests" / "fixtures" / "tiny-finetune.yaml"
SCRIPTS = ["convert_embedding.py", "merge_embeddings.py", "compare_embeddings.py", "evaluate.py"]


def script(name: str, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, f"scripts/{name}", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def ok(name: str, *args) -> subprocess.CompletedProcess:
    result = script(name, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result


def fails(name: str, *args) -> str:
    """Exit 2 with exactly one `error: ...` line on stderr; returns that line."""
    result = script(name, *args)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr[-3000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def awkward_vectors(n: int = 2, dim: int = 32, seed: int = 0) -> torch.Tensor:
    """float32 values with long decimal forms, -0.0, a subnormal and the largest float32."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, dim, generator=g) * torch.logspace(-6, 3, dim)
    v[0, :4] = torch.tensor([-0.0, 1e-45, 3.4028235e38, 1 / 3], dtype=torch.float32)
    return v


@pytest.mark.parametrize("argv", [[s, "--help"] for s in SCRIPTS] + [["evaluate.py", "clip", "--help"]])
def test_help_exits_0(argv):
    result = ok(*argv)
    assert "usage:" in result.stdout


# -- convert ------------------------------------------------------------------------------------------------
def test_convert_round_trip_through_every_format_is_bit_exact(tmp_path):
    vectors = awkward_vectors()
    start = write_embedding_file(tmp_path / "cat.pt", LoadedEmbedding("cat", vectors, token="*", step=120))
    chain = [
        ("cat.safetensors", EMB_PARAMS),
        ("learned_embeds.bin", DIFFUSERS),
        ("cat.png", A1111_PNG),
        ("back.pt", PAPER),
    ]
    src = start
    for name, fmt in chain:
        out = tmp_path / name
        result = ok("convert_embedding.py", src, out)
        assert f"({fmt})" in result.stdout
        (term,) = read_embedding_file(out)
        assert term.format == fmt and term.name == "cat", (name, term)
        assert torch.equal(bits(term.vectors), bits(vectors)), name
        src = out
    raw = torch.load(tmp_path / "back.pt", weights_only=True)  # a plain A1111-style paper dict
    assert list(raw["string_to_param"]) == ["*"] and raw["string_to_token"] == {"*": 265}
    assert not list(tmp_path.glob(".*.tmp"))


def test_convert_format_name_and_preview(tmp_path):
    vectors = awkward_vectors(3, seed=1)
    src = write_embedding_file(tmp_path / "cat.pt", LoadedEmbedding("cat", vectors, step=7))
    ok(
        "convert_embedding.py",
        src,
        tmp_path / "learned_embeds.safetensors",
        "--format",
        "diffusers",
        "--name",
        "<cat-toy>",
    )
    (term,) = read_embedding_file(tmp_path / "learned_embeds.safetensors")
    assert (term.format, term.name, term.token) == (DIFFUSERS, "<cat-toy>", "<cat-toy>")
    assert torch.equal(bits(term.vectors), bits(vectors))

    picture = Image.new("RGB", (24, 16), (10, 200, 30))
    picture.save(tmp_path / "picture.png")
    ok("convert_embedding.py", src, tmp_path / "card.png", "--preview", tmp_path / "picture.png")
    with Image.open(tmp_path / "card.png") as im:
        assert im.size == (24, 16) and im.convert("RGB").getpixel((3, 3)) == (10, 200, 30)
    (term,) = read_embedding_file(tmp_path / "card.png")
    assert (term.name, term.step) == ("cat", 7) and torch.equal(bits(term.vectors), bits(vectors))


def test_convert_refuses_bad_outputs(tmp_path):
    from ldm.embeddings.tools import convert_embedding

    src = write_embedding_file(tmp_path / "cat.pt", LoadedEmbedding("cat", awkward_vectors()))
    before = src.read_bytes()
    line = fails("convert_embedding.py", src, tmp_path / "cat.txt")
    assert all(s in line for s in (".pt", ".safetensors", ".bin", ".png", "'.txt'")), line
    for out, kwargs, message in [
        (tmp_path / "sub" / ".." / "cat.pt", {}, "is the input file"),
        (tmp_path / "cat.png", {"format": EMB_PARAMS}, "name it .safetensors"),
        (tmp_path / "x.png", {"preview": src}, "cannot be read"),
        (tmp_path / "x.bin", {"preview": src}, "--preview is the picture of an a1111-png"),
    ]:
        with pytest.raises(ConfigError, match=message) as exc:
            convert_embedding(src, out, **kwargs)
        assert "\n" not in str(exc.value)
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.pt"]  # nothing half-written


# -- merge --------------------------------------------------------------------------------------------------
@pytest.fixture
def clashing_files(tmp_path):
    cat, cat2, dog = awkward_vectors(1, seed=2), awkward_vectors(2, seed=3), awkward_vectors(1, seed=4)
    a = write_embedding_file(tmp_path / "a.pt", LoadedEmbedding("cat", cat, token="*"))
    b = write_embedding_file(
        tmp_path / "learned_embeds.bin", [LoadedEmbedding("dog", dog), LoadedEmbedding("cat", cat2)]
    )
    return a, b, {"cat": cat, "dog": dog, "cat-2": cat2}


def test_merge_clash_is_one_line_naming_both_files(clashing_files, tmp_path):
    a, b, _ = clashing_files
    line = fails("merge_embeddings.py", tmp_path / "merged.pt", a, b)
    assert str(a) in line and str(b) in line and "'cat'" in line and "--rename" in line
    assert not (tmp_path / "merged.pt").exists()


def test_merge_with_rename(clashing_files, tmp_path):
    a, b, expected = clashing_files
    result = ok("merge_embeddings.py", tmp_path / "merged.pt", a, b, "--rename")
    assert f"renamed 'cat' from {b} to 'cat-2'" in result.stdout
    terms = read_embedding_file(tmp_path / "merged.pt")
    assert [t.name for t in terms] == ["cat", "dog", "cat-2"] and {t.format for t in terms} == {PAPER}
    assert "holds one term but there are 3" in fails(
        "convert_embedding.py", tmp_path / "merged.pt", tmp_path / "merged.png"
    )
    for t in terms:
        assert torch.equal(bits(t.vectors), bits(expected[t.name])), t.name
    raw = torch.load(tmp_path / "merged.pt", weights_only=True)
    assert list(raw["string_to_param"]) == ["cat", "dog", "cat-2"]


def test_merge_without_clash_into_diffusers(tmp_path):
    one = write_embedding_file(tmp_path / "cat.safetensors", LoadedEmbedding("x", awkward_vectors(1, seed=5)))
    two = write_embedding_file(tmp_path / "dog.png", LoadedEmbedding("dog", awkward_vectors(3, seed=6)))
    result = ok("merge_embeddings.py", tmp_path / "both.safetensors", one, two)
    assert "renamed" not in result.stdout
    terms = read_embedding_file(tmp_path / "both.safetensors")
    assert [(t.name, t.num_vectors, t.format) for t in terms] == [("cat", 1, DIFFUSERS), ("dog", 3, DIFFUSERS)]
    from ldm.embeddings.tools import merge_embedding_files

    with pytest.raises(ConfigError, match="two input files"):
        merge_embedding_files(tmp_path / "m.pt", [one])
    with pytest.raises(ConfigError, match=r"\.bin/\.safetensors"):
        merge_embedding_files(tmp_path / "m.png", [one, two])
    with pytest.raises(ConfigError, match="also an input"):
        merge_embedding_files(one, [one, two])


def test_merge_names_compare_case_insensitively(tmp_path):
    from ldm.embeddings.tools import merge_embeddings

    a = write_embedding_file(
        tmp_path / "a.bin", [LoadedEmbedding("Cat", torch.ones(1, 8)), LoadedEmbedding("cat-2", torch.zeros(1, 8))]
    )
    b = write_embedding_file(tmp_path / "b.bin", LoadedEmbedding("cat", torch.full((1, 8), 2.0)))
    with pytest.raises(ConfigError, match="both"):
        merge_embeddings([a, b])
    terms, renames = merge_embeddings([a, b], rename=True)
    assert [t.name for t in terms] == ["Cat", "cat-2", "cat-3"]  # cat-2 is taken by the first file
    assert [(r.old, r.new, r.source) for r in renames] == [("cat", "cat-3", b)]


# -- compare ------------------------------------------------------------------------------------------------
PROMPTS = ["a photo of *", "* on the beach"]


def test_compare_embeddings_grid(tiny_ckpt, tmp_path):
    from ldm.evaluation.compare_embeddings import find_snapshots, grid_title
    from ldm.evaluation.xyz_grid import plan_layout

    run_dir = tmp_path / "run"
    g = torch.Generator().manual_seed(0)
    vectors = {}
    for step in (10, 2):  # written out of order; --logdir sorts by step, not by name ("gs-10" < "gs-2")
        vectors[step] = torch.randn(1, 32, generator=g) * 3
        write_embedding_file(
            run_dir / "checkpoints" / f"embeddings_gs-{step}.pt",
            LoadedEmbedding("*", vectors[step], token="*", step=step),
        )
    assert [p.name for p in find_snapshots(run_dir)] == ["embeddings_gs-2.pt", "embeddings_gs-10.pt"]
    out = tmp_path / "grid.png"
    ok(
        "compare_embeddings.py",
        "--ckpt",
        tiny_ckpt,
        "--config",
        FINETUNE,
        "--logdir",
        run_dir,
        "--prompts",
        *PROMPTS,
        "--seed",
        42,
        "--steps",
        2,
        "--H",
        64,
        "--W",
        64,
        "--scale",
        7.5,
        "--sampler",
        "ddim",
        "--device",
        "cpu",
        "--precision",
        "full",
        "--out",
        out,
    )

    layout = plan_layout((64, 64), ["step 2", "step 10"], PROMPTS, title=grid_title(42, 2, 7.5, "ddim", tiny_ckpt))
    with Image.open(out) as im:
        assert im.size == layout.size and (layout.rows, layout.cols) == (2, 2)
        assert json.loads(im.info["embeddings"]) == [
            str(run_dir / "checkpoints" / f"embeddings_gs-{s}.pt") for s in (2, 10)
        ]
        grid = np.asarray(im.convert("RGB")).astype(np.int16)
    cell = {
        (r, c): grid[
            layout.cell_box(r, c)[1] : layout.cell_box(r, c)[3], layout.cell_box(r, c)[0] : layout.cell_box(r, c)[2]
        ]
        for r in range(2)
        for c in range(2)
    }
    for r in range(2):
        assert np.abs(cell[r, 0] - cell[r, 1]).mean() > 1, "the two snapshots gave the same image"
    assert grid[: layout.top].min() < 128 and grid[:, : layout.left].min() < 128  # labels were drawn

    # Cell (row 1, column "step 10") is exactly what Generate makes with that snapshot and seed 42.
    from ldm.generate import Generate
    from ldm.model_loading import load_model_from_config

    model = load_model_from_config(FINETUNE, tiny_ckpt)
    model.embedding_manager.load(run_dir / "checkpoints" / "embeddings_gs-10.pt")
    ((image, _),) = Generate(model=model, device="cpu", precision="full", sampler_name="ddim").txt2img(
        PROMPTS[1], steps=2, seed=42, cfg_scale=7.5, width=64, height=64
    )
    assert np.abs(np.asarray(image).astype(np.int16) - cell[1, 1]).max() <= 1


def test_compare_embeddings_bad_inputs(tiny_ckpt, tmp_path):
    common = [
        "--ckpt",
        tiny_ckpt,
        "--config",
        FINETUNE,
        "--prompts",
        "a photo of *",
        "--steps",
        2,
        "--H",
        64,
        "--W",
        64,
        "--device",
        "cpu",
        "--out",
        tmp_path / "g.png",
    ]
    assert "not found" in fails("compare_embeddings.py", "--embeddings", tmp_path / "missing.pt", *common)
    assert not (tmp_path / "g.png").exists()
    from ldm.evaluation.compare_embeddings import find_snapshots

    with pytest.raises(ConfigError, match=r"no embeddings_gs-\*\.pt"):
        find_snapshots(tmp_path)


def test_labelled_grid_wraps_long_labels():
    from ldm.evaluation.xyz_grid import labelled_grid

    cells = [[Image.new("RGB", (16, 16), (40 * r, 90 * c, 0)) for c in range(3)] for r in range(2)]
    prompt = "a watercolor painting of * sitting on a very long wooden bench in the park at sunset"
    image, layout = labelled_grid(
        cells, ["step 100", "step 2000", "embeddings_final"], [prompt, "*"], title="seed 1 | ddim"
    )
    assert image.size == layout.size and len(layout.row_lines[0]) > 1 and len(layout.title_lines) == 1
    for r in range(2):
        for c in range(3):
            assert image.crop(layout.cell_box(r, c)).getpixel((8, 8)) == (40 * r, 90 * c, 0)
    assert layout.cell_box(1, 2)[2] <= image.width and layout.cell_box(1, 2)[3] <= image.height


# -- evaluate clip ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    """A tiny random transformers CLIPModel saved with save_pretrained, the shipped tokenizer beside it."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    CLIPModel(config).eval().save_pretrained(folder)
    for f in (ROOT / "ldm" / "assets" / "clip_tokenizer").iterdir():
        shutil.copy(f, folder / f.name)
    return folder


def random_images(folder: Path, sizes, seed: int) -> list[Image.Image]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = []
    for i, (w, h) in enumerate(sizes):
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        im.save(folder / f"{i:03}.png")
        images.append(im)
    return images


def direct_features(folder: Path, images=None, text=None) -> torch.Tensor:
    """The reference: transformers' own CLIP image processor and feature functions."""
    from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        if images is not None:
            processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
            out = model.get_image_features(pixel_values=processor(images=images, return_tensors="pt")["pixel_values"])
        else:
            tokens = CLIPTokenizer.from_pretrained(folder, local_files_only=True)([text], return_tensors="pt")
            out = model.get_text_features(**tokens)
    out = out if isinstance(out, torch.Tensor) else out.pooler_output
    return torch.nn.functional.normalize(out, dim=-1)


def test_evaluate_clip_matches_direct_computation(tiny_clip, tmp_path):
    training = random_images(tmp_path / "train", [(48, 40), (37, 64), (100, 90)], seed=1)
    generated = random_images(tmp_path / "gen", [(64, 64), (64, 64), (80, 48), (32, 32)], seed=2)
    result = ok(
        "evaluate.py",
        "clip",
        "--clip_model",
        tiny_clip,
        "--generated",
        tmp_path / "gen",
        "--training",
        tmp_path / "train",
        "--prompt",
        "a photo of *",
        "--json",
    )
    scores = json.loads(result.stdout)
    gen, train = direct_features(tiny_clip, images=generated), direct_features(tiny_clip, images=training)
    text = direct_features(tiny_clip, text="a photo of")
    assert scores["text"] == "a photo of" and (scores["n_generated"], scores["n_training"]) == (4, 3)
    assert scores["image_image"] == pytest.approx(float((gen @ train.T).mean()), abs=1e-5)
    assert scores["image_text"] == pytest.approx(float((gen @ text.T).mean()), abs=1e-5)

    # A set compared with itself: the diagonal pairs are 1 but the distinct images pull the mean below 1.
    from ldm.evaluation.clip_metrics import evaluate_clip

    same = evaluate_clip(tiny_clip, tmp_path / "train", tmp_path / "train", "a photo of *", device="cpu")
    sims = train @ train.T
    assert torch.allclose(sims.diagonal(), torch.ones(3), atol=1e-5)
    assert same.image_image == pytest.approx(float(sims.mean()), abs=1e-5)
    assert same.image_image < 1 - 1e-4 and same.image_image > float(sims[~torch.eye(3, dtype=torch.bool)].mean())


def test_evaluate_clip_is_one_for_identical_images(tiny_clip, tmp_path):
    picture = Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    for folder, count in (("gen", 3), ("train", 2)):
        (tmp_path / folder).mkdir()
        for i in range(count):
            picture.save(tmp_path / folder / f"{i}.png")
    result = ok(
        "evaluate.py",
        "clip",
        "--clip_model",
        tiny_clip,
        "--generated",
        tmp_path / "gen",
        "--training",
        tmp_path / "train",
        "--prompt",
        "* on the beach",
        "--device",
        "cpu",
    )
    rows = {line.split("  ")[0]: line.split() for line in result.stdout.splitlines()}
    image_row = rows["image-image (generated vs training)"]
    assert float(image_row[-4]) == pytest.approx(1.0, abs=1e-4) and image_row[-3:] == ["3", "x", "2"]
    assert any("'on the beach'" in line for line in result.stdout.splitlines())


def test_evaluate_clip_bad_inputs(tiny_clip, tmp_path):
    from ldm.errors import LdmUserError
    from ldm.evaluation.clip_metrics import evaluate_clip

    random_images(tmp_path / "imgs", [(32, 32)], seed=0)
    (tmp_path / "empty").mkdir()
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "not-a-model" / "config.json").write_text("{}")
    assert "has no CLIP model" in fails(
        "evaluate.py",
        "clip",
        "--clip_model",
        tmp_path / "not-a-model",
        "--generated",
        tmp_path / "imgs",
        "--training",
        tmp_path / "imgs",
        "--prompt",
        "a photo of *",
    )
    imgs = tmp_path / "imgs"
    for clip, generated, training, prompt, message in [
        (tiny_clip, tmp_path / "nope", imgs, "a photo of *", "--generated .*nope: no such folder"),
        (tiny_clip, imgs, tmp_path / "empty", "a photo of *", "--training .*empty has no images"),
        (tmp_path / "missing", imgs, imgs, "a photo of *", "--clip_model .*missing: no such folder"),
        (imgs, imgs, imgs, "a photo of *", "has no CLIP model"),
        (tiny_clip, imgs, imgs, "*", "only the placeholder"),
    ]:
        with pytest.raises(LdmUserError, match=message) as exc:
            evaluate_clip(clip, generated, training, prompt, device="cpu")
        assert "\n" not in str(exc.value)
