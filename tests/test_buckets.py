"""Aspect-ratio buckets: the bucket list, each photo's bucket and crop, SDXL's size inputs, and a training
stream in which no batch mixes buckets, resumable and split across DDP ranks."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from train_helpers import MIXED_PHOTOS, make_mixed_photos

from ldm.data.buckets import BucketSpec, cover_crop, make_buckets, nearest_bucket
from ldm.data.datamodule import DataModuleFromConfig
from ldm.data.personalized import PersonalizedBase
from ldm.errors import ConfigError

BUCKETS = {"buckets": True, "size": 64, "bucket_step": 16, "min_bucket": 32, "max_bucket": 128}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_mixed_photos(tmp_path_factory.mktemp("photos") / "mixed")


def _ds(root: Path, **kw) -> PersonalizedBase:
    return PersonalizedBase(data_root=str(root), **{**BUCKETS, "flip_p": 0.5, "repeats": 4, **kw})


def _upright_sizes() -> list[tuple[int, int]]:
    """(h, w) of each photo as displayed: the last is stored landscape with an EXIF 90-degree rotation."""
    sizes = [(h, w) for w, h in MIXED_PHOTOS]
    sizes[-1] = sizes[-1][::-1]
    return sizes


# ---- the bucket list and the geometry ------------------------------------------------------------
def test_sdxl_buckets_are_multiples_of_64_within_the_area():
    buckets = make_buckets(BucketSpec(1024, 64, 512, 2048))
    assert (1024, 1024) in buckets
    for h, w in buckets:
        assert h % 64 == 0 and w % 64 == 0 and 512 <= min(h, w) and max(h, w) <= 2048
        assert h * w <= 1024 * 1024 and (w, h) in buckets
        # the largest height for its width, or the largest width for its height (the transposed bucket)
        assert (h + 64) * w > 1024 * 1024 or h * (w + 64) > 1024 * 1024
    assert {(768, 1344), (832, 1216), (896, 1152)} <= set(buckets)  # SDXL's published training sizes


@pytest.mark.parametrize(("hw", "expected"), [((3000, 4000), (896, 1152)), ((4000, 3000), (1152, 896))])
def test_a_photo_goes_to_the_bucket_of_nearest_aspect(hw, expected):
    buckets = make_buckets(BucketSpec(1024))
    assert nearest_bucket(*hw, buckets) == expected
    aspect = hw[1] / hw[0]
    assert all(abs(expected[1] / expected[0] - aspect) <= abs(w / h - aspect) for h, w in buckets)


def test_cover_crop_covers_the_bucket_and_centres_the_window():
    crop = cover_crop(3000, 4000, (896, 1152))
    (rh, rw), (top, left) = crop.resized, crop.top_left
    assert rh >= 896 and rw >= 1152 and (rh == 896 or rw == 1152)  # covers, touching one side
    assert abs(rw / rh - 4000 / 3000) < 0.01  # aspect kept by the resize
    assert (top, left) == ((rh - 896) // 2, (rw - 1152) // 2) and top + left > 0
    assert crop.flipped().top_left == (top, rw - 1152 - left)


# ---- the dataset ---------------------------------------------------------------------------------
def test_items_carry_their_bucket_and_real_size_conditioning(photos):
    ds = _ds(photos)
    buckets = make_buckets(ds.bucket_spec)
    assert len(set(ds.bucket_sizes)) >= 3  # the photos' aspects land in several buckets
    for index, (h, w) in enumerate(_upright_sizes()):
        target = ds.bucket_sizes[index]
        assert target == nearest_bucket(h, w, buckets) and target[0] % 16 == 0 and target[1] % 16 == 0
        for flip in (False, True):
            cond = ds.size_conditioning(index, flip)
            assert cond["original_size_as_tuple"].tolist() == [h, w]
            assert cond["target_size_as_tuple"].tolist() == list(target)
            image = ds.pixels(index, flip)[0]
            assert tuple(image.shape) == (3, *target)


def test_crop_coords_are_where_the_pixels_come_from(photos):
    """Resizing the photo to the recorded size and cutting at the recorded (top, left) gives the item's pixels,
    flipped or not; the flipped item's left is measured in the mirrored photo."""
    ds = _ds(photos)
    for index, image in enumerate(ds.images):
        for flip in (False, True):
            cond = ds.size_conditioning(index, flip)
            (th, tw), (top, left) = cond["target_size_as_tuple"].tolist(), cond["crop_coords_top_left"].tolist()
            rh, rw = ds.geometry[index].resized
            resized = image.rgb.resize((rw, rh), resample=Image.Resampling.BICUBIC)
            if flip:
                resized = resized.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            expected = np.asarray(resized.crop((left, top, left + tw, top + th)), dtype=np.float32) / 127.5 - 1
            got = ds.pixels(index, flip)[0].permute(1, 2, 0).numpy()
            assert np.abs(got - expected).max() < 1e-5, (index, flip)
    assert any(sum(ds.size_conditioning(i, False)["crop_coords_top_left"].tolist()) > 0 for i in range(5))


def test_square_items_keep_their_pixels_and_record_the_photo_size(photos):
    """Without buckets the images stay size x size (as SD 1.x/2.x train) and still say what they were."""
    squeeze = PersonalizedBase(data_root=str(photos), size=32, flip_p=0.0)
    crop = PersonalizedBase(data_root=str(photos), size=32, flip_p=0.0, center_crop=True)
    for index, (h, w) in enumerate(_upright_sizes()):
        for ds in (squeeze, crop):
            item = ds.size_conditioning(index, False)
            assert item["original_size_as_tuple"].tolist() == [h, w]
            assert item["target_size_as_tuple"].tolist() == [32, 32]
            assert tuple(ds.pixels(index, False)[0].shape) == (3, 32, 32)
        assert squeeze.size_conditioning(index, False)["crop_coords_top_left"].tolist() == [0, 0]
        top, left = crop.size_conditioning(index, False)["crop_coords_top_left"].tolist()
        assert (top == 0) != (left == 0) or h == w  # the long side is cropped, centred
        assert max(top, left) == round((max(h, w) * 32 / min(h, w) - 32) / 2) if h != w else top == left == 0


# ---- batches: one bucket each, resumable, DDP ----------------------------------------------------
def _data(photos: Path, batch_size: int = 2, **kw) -> DataModuleFromConfig:
    params = {"data_root": str(photos), **BUCKETS, "repeats": 4, **kw}
    data = DataModuleFromConfig(
        batch_size=batch_size, seed=3, train={"target": "ldm.data.personalized.PersonalizedBase", "params": params}
    )
    data.setup("fit")
    return data


def test_no_batch_mixes_buckets_and_every_image_is_seen(photos):
    data = _data(photos, batch_size=2)
    seen = set()
    for batch in data.train_dataloader(num_batches=12):  # collating would fail on mixed sizes
        sizes = batch["target_size_as_tuple"]
        assert (sizes == sizes[0]).all() and tuple(batch["image"].shape[-2:]) == tuple(sizes[0].tolist())
        assert batch["original_size_as_tuple"].shape == (2, 2) and batch["crop_coords_top_left"].shape == (2, 2)
        seen |= set(batch["image_index"].tolist())
    assert seen == set(range(len(MIXED_PHOTOS)))


def test_bucketed_stream_resumes_and_splits_across_ranks(photos):
    def indices(data: DataModuleFromConfig, n: int) -> list[list[int]]:
        return [b["k"].tolist() + b["image_index"].tolist() for b in data.train_dataloader(num_batches=n)]

    whole = indices(_data(photos, batch_size=2), 8)
    resumed = _data(photos, batch_size=2)
    resumed.set_start_batch(5)
    assert indices(resumed, 3) == whole[5:]
    ranks = []
    for rank in (0, 1):
        data = _data(photos, batch_size=2)
        data.set_distributed(rank, 2)
        ranks.append(indices(data, 4))
    assert [b for pair in zip(*ranks) for b in pair] == whole  # rank batches interleave into the single stream


def test_the_seed_changes_the_bucket_order(photos):
    a = [_ds(photos, seed=s) for s in (1, 2)]
    for ds in a:
        ds.set_batch_size(2)
    orders = [[ds.image_index(k) for k in range(40)] for ds in a]
    assert orders[0] != orders[1]
    assert sorted(set(orders[0])) == list(range(len(MIXED_PHOTOS)))


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"buckets": "yes"}, "buckets must be true or false"),
        ({"bucket_step": 30}, "bucket_step 30 must be a positive multiple of 8"),
        ({"bucket_step": 0}, "bucket_step must be a positive integer"),
        ({"min_bucket": 40}, "min_bucket 40 must be a positive multiple of bucket_step 16"),
        ({"min_bucket": 96}, "size 64 must lie between min_bucket 96 and max_bucket 128"),
    ],
)
def test_bad_bucket_settings_are_one_line(photos, kw, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)) as err:
        _ds(photos, **kw)
    assert "\n" not in str(err.value)


def test_sd_items_are_unchanged_by_the_size_keys(photos):
    """The square path's pixels are what SD 1.x/2.x trained on before buckets existed."""
    ds = PersonalizedBase(data_root=str(photos), size=32, flip_p=0.0)
    expected = np.asarray(ds.images[1].rgb.resize((32, 32), resample=Image.Resampling.BICUBIC), dtype=np.float32)
    assert torch.equal(ds[0]["image"].new_tensor(expected / 127.5 - 1).permute(2, 0, 1), ds.pixels(1, False)[0])
