"""The procedural toy world: single-token vocabulary, clean deterministic renders, reproducible items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ldm.data.toy_world import (
    CAPTION_TEMPLATES,
    COLOUR_NAMES,
    COLOURS,
    GENERIC_SHAPE_WORD,
    PLAIN_TEMPLATES,
    SHAPES,
    ToyScene,
    ToyWorldDataset,
    render,
    render_concept_images,
    sample_scene,
)

CONCEPT_FOLDER = Path(__file__).resolve().parents[1] / "training_data" / "toy-purple-star"


@pytest.fixture(scope="module")
def tokenizer():
    from ldm.modules.encoders.tokenizer import load_tokenizer

    return load_tokenizer()


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False).input_ids


@pytest.mark.parametrize("template", CAPTION_TEMPLATES + PLAIN_TEMPLATES)
def test_every_attribute_word_is_one_clip_token_in_a_caption(tokenizer, template):
    # Swap one word at a time into a fixed caption: exactly one token must change, by one id.
    base = ToyScene("circle", "red", "blue")
    for field, words in (("shape", SHAPES), ("colour", COLOUR_NAMES), ("background", COLOUR_NAMES)):
        if "{" + field + "}" not in template:
            continue
        for word in words:
            scene = ToyScene(**{**base.__dict__, field: word})
            if scene.colour == scene.background:
                continue
            ids = _ids(tokenizer, scene.caption(template))
            single = _ids(tokenizer, word)
            assert len(single) == 1, word
            assert single[0] in ids, (word, template)
            assert len(ids) == len(_ids(tokenizer, base.caption(template))), (word, template)


def test_vocabulary_is_sane():
    assert len(set(SHAPES)) == len(SHAPES) >= 8
    assert len(COLOURS) >= 9
    for rgb in COLOURS.values():
        assert len(rgb) == 3 and all(0 <= c <= 255 for c in rgb)
    for t in CAPTION_TEMPLATES:
        assert "{colour} {shape}" in t and "{background}" in t


def test_render_is_deterministic_and_varies_with_seed():
    a = np.asarray(render("star", "red", "blue", 64, np.random.default_rng(1)))
    b = np.asarray(render("star", "red", "blue", 64, np.random.default_rng(1)))
    c = np.asarray(render("star", "red", "blue", 64, np.random.default_rng(2)))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_render_rejects_invisible_or_unknown():
    with pytest.raises(ValueError):
        render("star", "red", "red")
    with pytest.raises(ValueError):
        render("hexagon", "red", "blue")
    with pytest.raises(ValueError):
        render("star", "cyan", "blue")


def _near(img: np.ndarray, rgb: tuple[int, int, int], tol: float = 40.0) -> np.ndarray:
    return np.linalg.norm(img.astype(np.float32) - np.array(rgb, np.float32), axis=-1) < tol


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_colour_dominates_the_centre_and_background_the_corners(shape):
    colour, background = "yellow", "purple"
    centre_frac, border_frac = [], []
    for seed in range(12):
        img = np.asarray(render(shape, colour, background, 64, np.random.default_rng(seed)))
        fg, bg = _near(img, COLOURS[colour]), _near(img, COLOURS[background])
        # Anti-aliased edges aside, every pixel is one of the two colours.
        assert (fg | bg).mean() > 0.9
        # Shape covers a sensible part of the image: not a speck, not the whole frame.
        assert 0.05 < fg.mean() < 0.65
        assert bg[0, 0] and bg[0, -1] and bg[-1, 0] and bg[-1, -1]
        centre_frac.append(fg[16:48, 16:48].mean())
        border = np.ones_like(fg)
        border[8:56, 8:56] = False
        border_frac.append(fg[border].mean())
    assert np.mean(centre_frac) > 2 * np.mean(border_frac)


def test_render_is_antialiased():
    img = np.asarray(render("circle", "white", "black", 64, np.random.default_rng(0)))
    grey = img[..., 0]
    # Intermediate values on the edge show supersampling; hard edges would leave only 2 levels.
    assert ((grey > 40) & (grey < 215)).sum() > 20


def test_sample_scene_never_hides_the_shape():
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(500)]
    assert all(s.colour != s.background for s in scenes)
    assert {s.shape for s in scenes} == set(SHAPES)
    assert {s.colour for s in scenes} == set(COLOUR_NAMES)


def test_dataset_items_are_deterministic_and_labels_match_caption():
    ds = ToyWorldDataset(size=32, length=50, seed=7)
    assert len(ds) == 50 and len(ToyWorldDataset()) == 100000
    again = ToyWorldDataset(size=32, length=50, seed=7)
    other = ToyWorldDataset(size=32, length=50, seed=8)
    differs = 0
    for k in (0, 1, 2, 17, 49):
        item, twin = ds[k], again[k]
        assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
        assert item["image"].min() >= -1 and item["image"].max() <= 1
        assert torch.equal(item["image"], twin["image"]) and item["caption"] == twin["caption"]
        shape, colour, bg = SHAPES[item["shape"]], COLOUR_NAMES[item["colour"]], COLOUR_NAMES[item["background"]]
        assert f"{colour} {shape}" in item["caption"]
        assert bg in item["caption"].replace(f"{colour} {shape}", "")
        assert colour != bg
        differs += other[k]["caption"] != item["caption"]
    assert differs > 0
    assert len({ds[k]["caption"] for k in range(50)}) > 25
    with pytest.raises(IndexError):
        ds[50]


def test_dataset_works_in_a_dataloader():
    loader = torch.utils.data.DataLoader(ToyWorldDataset(size=16, length=8), batch_size=4)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 16, 16) and len(batch["caption"]) == 4
    assert batch["shape"].dtype == torch.int64


def test_render_concept_images_writes_n_files(tmp_path):
    folder = tmp_path / "toy-red-star"
    paths = render_concept_images("star", "red", 5, folder, seed=3, size=64)
    assert len(paths) == 5 and sorted(folder.glob("*.png")) == sorted(paths)
    corners = set()
    for p in paths:
        img = Image.open(p)
        assert img.size == (64, 64) and img.mode == "RGB"
        corners.add(img.getpixel((0, 0)))
    assert COLOURS["red"] not in corners and len(corners) == 5  # varied backgrounds, never the shape colour
    again = render_concept_images("star", "red", 5, tmp_path / "again", seed=3, size=64)
    assert all(np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))) for a, b in zip(paths, again))
    assert not list(folder.glob("*.txt"))


def test_concept_captions_name_each_image_background(tmp_path):
    inverse = {rgb: name for name, rgb in COLOURS.items()}
    paths = render_concept_images("star", "purple", 5, tmp_path, seed=0, size=64, captions=True)
    for p in paths:
        background = inverse[Image.open(p).getpixel((0, 0))]
        assert p.with_suffix(".txt").read_text() == f"{background} background\n"


def test_committed_concept_folder_is_what_the_generator_writes(tmp_path):
    committed = sorted(CONCEPT_FOLDER.iterdir())
    render_concept_images("star", "purple", 5, tmp_path, seed=0, size=512, captions=True)
    assert [p.name for p in committed] == sorted(p.name for p in tmp_path.iterdir())
    for p in committed:
        if p.suffix == ".txt":
            assert p.read_text() == (tmp_path / p.name).read_text()
        else:
            assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(tmp_path / p.name)))


def test_generic_and_plain_captions_appear_at_their_rates(tokenizer):
    assert len(_ids(tokenizer, GENERIC_SHAPE_WORD)) == 1
    data = ToyWorldDataset(size=16, length=2000, seed=3, plain_p=0.25, generic_p=0.15)
    captions = [data.scene(k)[1] for k in range(2000)]
    generic = sum(f" {GENERIC_SHAPE_WORD}" in c for c in captions) / len(captions)
    plain = sum(sum(w.strip(",") in COLOUR_NAMES for w in c.split()) == 1 for c in captions) / len(captions)
    assert 0.11 < generic < 0.19 and 0.20 < plain < 0.30, (generic, plain)
    default = ToyWorldDataset(size=16, length=50, seed=3)
    assert all(GENERIC_SHAPE_WORD not in default.scene(k)[1] for k in range(50))
