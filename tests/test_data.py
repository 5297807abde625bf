"""The training data pipeline: image loading, deterministic sampling by (seed, k), captions, the
resumable DDP batch sampler and the data module."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ldm.data import captions as cap
from ldm.data.datamodule import DataModuleFromConfig
from ldm.data.personalized import PER_IMAGE_TOKENS, PersonalizedBase, PersonalizedObject
from ldm.data.personalized_style import PersonalizedBase as PaperStyleName
from ldm.data.personalized_style import PersonalizedStyle
from ldm.data.step_sampler import StepBatchSampler, batch_indices
from ldm.data.templates import OBJECT_DUAL_TEMPLATES, OBJECT_TEMPLATES, STYLE_TEMPLATES
from ldm.errors import ConfigError

S = 16  # image side used by the tests: small keeps them fast


def _noise(w: int, h: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture
def concept(tmp_path: Path) -> Path:
    """Three images (plain, EXIF-rotated JPEG, half-transparent PNG), a sidecar caption and junk."""
    root = tmp_path / "concept"
    root.mkdir()
    _noise(40, 30, 0).save(root / "00012-a_red-cat.png")
    (root / "00012-a_red-cat.txt").write_text("sidecar words, second tag\n")
    rotated = Image.new("RGB", (40, 20), (255, 0, 0))
    rotated.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    rotated.save(root / "b_sleepy_dog.jpg", exif=exif.tobytes(), quality=95)
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[..., 1] = 200
    rgba[:, 16:, 3] = 255  # left half fully transparent, right half opaque
    Image.fromarray(rgba, "RGBA").save(root / "c_alpha.png")
    (root / "notes.json").write_text("{}")
    (root / ".DS_Store").write_bytes(b"\x00\x01junk")
    (root / "readme.md").write_text("not an image")
    (root / "sub").mkdir()
    return root


def _ds(root, cls=PersonalizedBase, **kw):
    kw.setdefault("size", S)
    return cls(data_root=str(root), **kw)


# ---- loading -------------------------------------------------------------------------------------
def test_loads_images_only_and_applies_exif(concept):
    ds = _ds(concept)
    assert [im.path.name for im in ds.images] == ["00012-a_red-cat.png", "b_sleepy_dog.jpg", "c_alpha.png"]
    upright = np.asarray(ds.images[1].rgb).astype(int)
    assert ds.images[1].rgb.size == (20, 40)  # rotated: portrait now
    assert upright[5, 10, 0] > 200 and upright[5, 10, 2] < 60  # stored left (red) is now on top
    assert upright[35, 10, 2] > 200 and upright[35, 10, 0] < 60
    assert ds.images[0].caption == "sidecar words, second tag" and ds.images[1].caption is None
    assert len(ds) == 3 * 100 and len(_ds(concept, set="val")) == 3


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: p / "missing", "no such folder"),
        (
            lambda p: (p / "only_junk").mkdir() or (p / "only_junk" / "a.txt").write_text("x") and p / "only_junk",
            "has no images",
        ),
    ],
)
def test_bad_data_root_is_one_line_error(tmp_path, make, needle):
    root = make(tmp_path)
    with pytest.raises(ConfigError, match=needle) as err:
        _ds(root)
    assert "\n" not in str(err.value) and str(root) in str(err.value)


def test_corrupt_image_is_named(concept):
    (concept / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ConfigError, match=r"broken\.png") as err:
        _ds(concept)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"interpolation": "cubicle"}, "interpolation"),
        ({"set": "training"}, "set"),
        ({"flip_p": 1.5}, "flip_p"),
        ({"size": 0}, "size"),
        ({"repeats": 0}, "repeats"),
        ({"tag_drop_out": 1.0}, "tag_drop_out"),
        ({"filename_regex": "[a-"}, "filename_regex"),
        ({"templates": ["no slot here"]}, "no slot here"),
        ({"placeholder_token": ""}, "placeholder_token"),
        ({"size": "big"}, "size"),
        ({"size": 12.5}, "size"),
        ({"flip_p": "often"}, "flip_p"),
    ],
)
def test_bad_params_raise_config_error(concept, kw, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)) as err:
        _ds(concept, **kw)
    assert "\n" not in str(err.value)


# ---- items and determinism -----------------------------------------------------------------------
def test_item_keys_shapes_and_ranges(concept):
    item = _ds(concept)[7]
    sizes = {"original_size_as_tuple", "crop_coords_top_left", "target_size_as_tuple"}  # SDXL's; SD 1/2 ignore them
    assert set(item) == {"image", "caption", "image_index", "flip", "k", *sizes}
    assert item["image"].shape == (3, S, S) and item["image"].dtype == torch.float32
    assert item["image"].min() >= -1 and item["image"].max() <= 1 and item["k"] == 7
    assert isinstance(item["flip"], bool) and isinstance(item["image_index"], int)


def test_same_seed_and_k_give_identical_items_beyond_len(concept):
    a, b = _ds(concept, seed=5, repeats=2), _ds(concept, seed=5, repeats=2)
    b[3], b[0]  # a different history must not matter
    for k in (0, 1, 5, 6, 1000, 10**7):
        x, y = a[k], b[k]
        assert torch.equal(x["image"], y["image"])
        assert (x["caption"], x["image_index"], x["flip"], x["k"]) == (y["caption"], y["image_index"], y["flip"], k)


def test_different_seed_gives_different_stream(concept):
    a, b = _ds(concept, seed=0), _ds(concept, seed=1)
    assert a.debug_items(30) != b.debug_items(30)
    assert [i for _, _, i, _ in a.debug_items(30)] != [i for _, _, i, _ in b.debug_items(30)]
    a.set_seed(1)
    assert a.debug_items(30) == b.debug_items(30)


def test_every_image_once_per_epoch_in_shuffled_order(concept):
    ds = _ds(concept)
    n = ds.num_images
    orders = [tuple(ds.image_index(k) for k in range(e * n, (e + 1) * n)) for e in range(60)]
    assert all(sorted(o) == list(range(n)) for o in orders)
    assert len(set(orders)) > 3  # shuffled, not k % n


def test_flip_rate_and_flipped_pixels(concept):
    ds = _ds(concept, flip_p=0.3)
    flips = [ds.describe(k).flip for k in range(4000)]
    assert abs(np.mean(flips) - 0.3) < 0.03
    assert not any(p.flip for p in map(_ds(concept, flip_p=0.0).describe, range(200)))
    k_flip = flips.index(True)
    k_plain = next(k for k, f in enumerate(flips) if not f and ds.image_index(k) == ds.image_index(k_flip))
    assert torch.equal(ds[k_flip]["image"], ds[k_plain]["image"].flip(-1))


def test_pixel_cache_is_stable_and_not_aliased(concept):
    ds = _ds(concept)
    item = ds[0]
    item["image"].zero_()  # a consumer writing into its batch must not change later items
    again = ds[0]
    assert again["image"].abs().sum() > 0
    assert torch.equal(again["image"], _ds(concept)[0]["image"])


def test_center_crop_versus_squeeze(concept):
    squeeze = _ds(concept, flip_p=0.0).pixels(1, False)[0]  # 20x40 portrait: red top, blue bottom
    crop = _ds(concept, flip_p=0.0, center_crop=True).pixels(1, False)[0]
    assert squeeze[0, 1].mean() > 0.8 and squeeze[2, -2].mean() > 0.8  # whole image kept
    assert abs(crop[0, 1].mean() - crop[0, -2].mean()) > 1.5  # centre square: red above blue, both halves
    assert crop[0, : S // 4].mean() > 0.5 and crop[2, -S // 4 :].mean() > 0.5


def test_validation_set_is_ordered_and_unflipped(concept):
    ds = _ds(concept, set="validation")
    assert [(i, f) for _, _, i, f in ds.debug_items(6)] == [(0, False), (1, False), (2, False)] * 2


# ---- captions ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cls, templates",
    [
        (PersonalizedBase, OBJECT_TEMPLATES),
        (PersonalizedObject, OBJECT_TEMPLATES),
        (PersonalizedStyle, STYLE_TEMPLATES),
        (PaperStyleName, STYLE_TEMPLATES),
    ],
)
def test_captions_use_placeholder_and_right_templates(concept, cls, templates):
    ds = _ds(concept, cls=cls, placeholder_token="<my-cat>")
    allowed = {t.format("<my-cat>") for t in templates}
    captions = [ds.describe(k).caption for k in range(300)]
    assert set(captions) <= allowed and len(set(captions)) > len(templates) // 2


def test_per_image_tokens_use_dual_templates(concept):
    ds = _ds(concept, per_image_tokens=True, mixing_prob=1.0)
    for _k, caption, i, _ in ds.debug_items(50):
        assert caption in {t.format("*", PER_IMAGE_TOKENS[i]) for t in OBJECT_DUAL_TEMPLATES}
    mixed = _ds(concept, per_image_tokens=True, mixing_prob=0.25)
    rate = np.mean([" with " in c for _, c, _, _ in mixed.debug_items(2000)])
    assert abs(rate - 0.25) < 0.04


def test_per_image_tokens_are_single_distinct_clip_tokens():
    from ldm.modules.encoders.tokenizer import load_tokenizer

    tok = load_tokenizer()
    base = len(tok("a photo of a * with").input_ids)
    ids = [tok("a photo of a * with " + t).input_ids[-2] for t in PER_IMAGE_TOKENS]
    assert all(len(tok("a photo of a * with " + t).input_ids) == base + 1 for t in PER_IMAGE_TOKENS)
    assert len(set(ids)) == len(PER_IMAGE_TOKENS) >= 20


def test_coarse_class_text_precedes_placeholder(concept):
    caption = _ds(concept, coarse_class_text="cat").describe(0).caption
    assert "cat *" in caption


def test_template_file_name_filewords_sidecar_and_regex(concept, tmp_path):
    tf = tmp_path / "t.txt"
    tf.write_text("a photo of [name], [filewords]\n\n")
    ds = _ds(concept, template_file=str(tf), placeholder_token="sks")
    by_image = {i: c for _, c, i, _ in ds.debug_items(6)}
    assert by_image[0] == "a photo of sks, sidecar words, second tag"  # the sidecar wins over the name
    assert by_image[1] == "a photo of sks, b sleepy dog"  # default regex: runs of letters
    ds = _ds(concept, template_file=str(tf), filename_regex=r"[a-z]{3,}", filename_join="+")
    assert {c for _, c, i, _ in ds.debug_items(6) if i == 1} == {"a photo of *, sleepy+dog"}


def test_filename_words_and_fill_template():
    assert cap.filename_words("00012-a_photo-of cat.png") == "a photo of cat"
    assert cap.filename_words("x/00012-a_photo-of cat.png", regex="") == "00012-a photo-of cat"
    assert cap.filename_words("straße_über.jpg") == "straße über"
    assert cap.fill_template("[filewords], by [name]", "*", "") == "by *"
    assert cap.fill_template("a {} of [name]", "<t>", "[name]") == "a <t> of <t>"
    assert cap.fill_template("[filewords] [name]", "*", "has [name] inside") == "has [name] inside *"
    assert cap.fill_template("a photo of a {} with {}", "*", image_token="ก") == "a photo of a * with ก"


def test_shuffle_and_drop_out_tags(concept, tmp_path):
    tf = tmp_path / "t.txt"
    tf.write_text("[name], [filewords]\n")
    (concept / "b_sleepy_dog.txt").write_text("t0, t1, t2, t3, t4, t5")
    shuffled = _ds(concept, template_file=str(tf), shuffle_tags=True, seed=3)
    tags = [c.split(", ")[1:] for _, c, i, _ in shuffled.debug_items(300) if i == 1]
    assert all(sorted(t) == [f"t{j}" for j in range(6)] for t in tags)
    assert len({tuple(t) for t in tags}) > 10
    assert tags == [
        c.split(", ")[1:]
        for _, c, i, _ in _ds(concept, template_file=str(tf), shuffle_tags=True, seed=3).debug_items(300)
        if i == 1
    ]
    dropped = _ds(concept, template_file=str(tf), tag_drop_out=0.5)
    kept = [len(c.split(", ")) - 1 for _, c, i, _ in dropped.debug_items(600) if i == 1]
    assert abs(np.mean(kept) / 6 - 0.5) < 0.08
    assert all(c.split(", ")[1:] == sorted(c.split(", ")[1:]) for _, c, i, _ in dropped.debug_items(60) if i == 1)


def test_placeholder_that_is_a_template_word_is_refused(concept):
    with pytest.raises(ConfigError, match=r"'photo'.*a photo of a \{\}") as err:
        cap.placeholder_in_templates("photo", ["a painting of {}", "a photo of a {}"])
    assert "\n" not in str(err.value)
    cap.placeholder_in_templates("<photo>", ["a photo of a {}"])
    cap.placeholder_in_templates("*", OBJECT_TEMPLATES + STYLE_TEMPLATES)
    cap.placeholder_in_templates("phot", ["a photo of a {}"])  # part of a word is fine
    with pytest.raises(ConfigError, match="Photo"):
        _ds(concept, placeholder_token="Photo")
    with pytest.raises(ConfigError, match="style"):
        _ds(concept, cls=PersonalizedStyle, placeholder_token="style")


# ---- alpha as weight -----------------------------------------------------------------------------
def test_alpha_becomes_weight_and_opaque_images_get_ones(concept):
    ds = _ds(concept, use_alpha_as_weight=True, flip_p=0.0)
    items = {ds[k]["image_index"]: ds[k] for k in range(3)}
    w = items[2]["weight"]
    assert w.shape == (1, S, S) and w.min() >= 0 and w.max() <= 1
    assert w[0, :, : S // 2 - 2].max() < 0.05 and w[0, :, S // 2 + 2 :].min() > 0.95
    assert torch.equal(items[0]["weight"], torch.ones(1, S, S))
    assert items[2]["image"][:, :, :4].min() > 0.95  # transparent pixels are composited over white
    assert "weight" not in _ds(concept)[0]


# ---- batch sampler and data module ---------------------------------------------------------------
def test_step_batch_sampler_partitions_ranks_and_resumes():
    bs, world, batches = 3, 3, 7
    seen = []
    for rank in range(world):
        seen += [k for batch in StepBatchSampler(bs, 0, rank, world, num_batches=batches) for k in batch]
    assert sorted(seen) == list(range(bs * world * batches))  # no overlap, no gap
    full = list(StepBatchSampler(bs, 0, 1, world, num_batches=batches))
    assert list(StepBatchSampler(bs, 4, 1, world, num_batches=batches - 4)) == full[4:]
    assert full[2] == batch_indices(2, bs, 1, world) == [21, 22, 23]
    endless = iter(StepBatchSampler(2, start_batch=10**6))
    assert next(endless) == [2 * 10**6, 2 * 10**6 + 1]
    with pytest.raises(TypeError):
        len(StepBatchSampler(2))
    with pytest.raises(ConfigError):
        StepBatchSampler(2, rank=2, world_size=2)


def _dm(root, **kw) -> DataModuleFromConfig:
    train = {
        "target": "ldm.data.personalized.PersonalizedBase",
        "params": {"data_root": str(root), "size": S, "placeholder_token": "*"},
    }
    return DataModuleFromConfig(batch_size=2, train=train, **kw)


def _batches(dm, n):
    return list(dm.train_dataloader(num_batches=n))


def test_datamodule_workers_resume_and_ranks(concept):
    dm0, dm2 = _dm(concept, seed=4), _dm(concept, seed=4, num_workers=2)
    dm0.setup("fit")
    dm0.setup("fit")  # idempotent: the trainer calls setup again
    a, b = _batches(dm0, 5), _batches(dm2, 5)
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"]) and x["caption"] == y["caption"]
        assert torch.equal(x["k"], y["k"]) and torch.equal(x["flip"], y["flip"])
    assert [x["k"].tolist() for x in a] == [[2 * b, 2 * b + 1] for b in range(5)]
    dm0.set_start_batch(3)
    resumed = _batches(dm0, 2)
    assert [x["caption"] for x in resumed] == [x["caption"] for x in a[3:]]
    dm0.set_distributed(1, 2)
    assert [x["k"].tolist() for x in _batches(dm0, 1)] == [[(3 * 2 + 1) * 2, (3 * 2 + 1) * 2 + 1]]
    assert dm0.train_dataset.seed == 4
    dm0.set_seed(9)
    assert dm0.train_dataset.seed == 9 and dm0.train_dataset.debug_items(2)[0][0] == 0


def test_datamodule_needs_train_config():
    with pytest.raises(ConfigError, match="train"):
        DataModuleFromConfig(batch_size=1)


def test_lightning_fit_reads_the_endless_stream(concept):
    import lightning.pytorch as pl

    class Recorder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.ks = []

        def training_step(self, batch, _):
            self.ks.append(batch["k"].tolist())
            return (self.w * batch["image"].mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = _dm(concept)
    dm.set_start_batch(2)
    model = Recorder()
    trainer = pl.Trainer(
        max_steps=3,
        max_epochs=-1,
        use_distributed_sampler=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, dm)
    assert model.ks == [[4, 5], [6, 7], [8, 9]]


def test_datamodule_validation_loader_is_ordered(concept):
    val = {
        "target": "ldm.data.personalized.PersonalizedBase",
        "params": {"data_root": str(concept), "size": S, "set": "validation"},
    }
    dm = _dm(concept, validation=val)
    batches = list(dm.val_dataloader())
    assert [b["image_index"].tolist() for b in batches] == [[0, 1], [2]]
    assert not any(b["flip"].any() for b in batches)
    assert "val_dataloader" not in vars(_dm(concept))  # no validation config: Lightning sees no val hook


def test_several_concepts_from_omegaconf_lists(concept, tmp_path):
    from omegaconf import OmegaConf

    other = tmp_path / "other"
    other.mkdir()
    _noise(20, 20, 7).save(other / "x.png")
    node = OmegaConf.create(
        {
            "target": "ldm.data.personalized_style.PersonalizedStyle",
            "params": {"data_root": [str(concept), str(other)], "size": S, "placeholder_token": ["<a>", "<b>"]},
        }
    )
    from ldm.util import instantiate_from_config

    ds = instantiate_from_config(node)
    assert ds.num_images == 4 and len(ds) == 400
    for _, caption, i, _ in ds.debug_items(40):
        assert caption.endswith("<b>" if i == 3 else "<a>")
    with pytest.raises(ConfigError, match="placeholder tokens"):
        PersonalizedBase(data_root=[str(concept), str(other)], placeholder_token=["<a>", "<b>", "<c>"])
