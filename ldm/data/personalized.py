"""The personalized dataset: a handful of images of one concept, captioned with the placeholder.

Every random choice of sample k (image, flip, template, tags) is a pure function of (seed, k), and k may
exceed len(): the trainer asks for global sample indices, so a resumed run continues the same stream.
Within each "epoch" of num_images consecutive samples every image appears exactly once (square images; with
`buckets: true` every batch holds one aspect-ratio bucket instead, see ldm.data.bucket_order).
Every item carries SDXL's size conditioning: the photo's (h, w), the crop's (top, left) in the resized photo,
and the trained (h, w); SD 1.x/2.x ignore them.
`PersonalizedBase` is the object dataset (the class name the paper's configs use).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from PIL import Image
from torch.utils.data import Dataset

from ldm.data import captions as cap
from ldm.data.bucket_order import BucketOrder
from ldm.data.buckets import BucketSpec, CoverCrop, cover_crop, make_buckets, nearest_bucket, square_geometry
from ldm.data.images import TrainingImage, load_training_images
from ldm.data.sample_rng import CAPTION, FLIP, epoch_permutation, sample_rng
from ldm.data.templates import OBJECT_DUAL_TEMPLATES, OBJECT_TEMPLATES, PER_IMAGE_TOKENS
from ldm.data.transforms import cover_resize, image_tensor, mask_tensor, resolve_interpolation, square_resize
from ldm.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["PersonalizedBase", "PersonalizedObject", "ItemPlan", "PER_IMAGE_TOKENS"]

TRAIN_SETS, EVAL_SETS = ("train",), ("val", "validation", "test")


class ItemPlan(NamedTuple):
    k: int
    caption: str
    image_index: int
    flip: bool


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") else list(value)


def _positive_int(name: str, value: Any) -> int:
    try:
        number = int(float(value))
        whole = float(value) == number
    except (TypeError, ValueError, OverflowError):
        number, whole = 0, False
    if number <= 0 or not whole or isinstance(value, bool):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return number


def _probability(name: str, value: float, upper_open: bool = False) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= value <= 1.0 or (upper_open and value == 1.0):
        raise ConfigError(f"{name} must be in [0, 1{')' if upper_open else ']'}, got {value}")
    return value


class PersonalizedBase(Dataset):
    """Object images captioned from the object templates (or `templates` / `template_file`).

    `data_root` and `placeholder_token` may be lists (one placeholder per folder) to train several
    concepts at once; image indices then run over all folders in order.
    """

    default_templates: Sequence[str] = OBJECT_TEMPLATES
    dual_templates: Sequence[str] = OBJECT_DUAL_TEMPLATES

    def __init__(
        self,
        data_root: str | Sequence[str],
        size: int = 512,
        repeats: int = 100,
        interpolation: str = "bicubic",
        flip_p: float = 0.5,
        set: str = "train",
        placeholder_token: str | Sequence[str] = "*",
        per_image_tokens: bool = False,
        center_crop: bool = False,
        mixing_prob: float = 0.25,
        coarse_class_text: str | None = None,
        templates: Sequence[str] | None = None,
        template_file: str | None = None,
        filename_regex: str | None = None,
        filename_join: str = " ",
        shuffle_tags: bool = False,
        tag_drop_out: float = 0.0,
        use_alpha_as_weight: bool = False,
        seed: int = 0,
        buckets: bool = False,
        bucket_step: int = 64,
        min_bucket: int | None = None,
        max_bucket: int | None = None,
    ):
        """`buckets`: aspect-ratio buckets of at most size x size pixels, sides in steps of `bucket_step` from
        `min_bucket` (default size/2) to `max_bucket` (default 2 x size); else every image is size x size."""
        size, repeats = _positive_int("size", size), _positive_int("repeats", repeats)
        if set not in TRAIN_SETS + EVAL_SETS:
            raise ConfigError(f"set {set!r} is unknown; use one of: {', '.join(TRAIN_SETS + EVAL_SETS)}")
        self.size, self.repeats, self.set, self.train = size, repeats, set, set in TRAIN_SETS
        self.resample = resolve_interpolation(interpolation)
        self.flip_p = _probability("flip_p", flip_p)
        self.mixing_prob = _probability("mixing_prob", mixing_prob)
        self.tag_drop_out = _probability("tag_drop_out", tag_drop_out, upper_open=True)
        self.center_crop, self.per_image_tokens = bool(center_crop), bool(per_image_tokens)
        self.shuffle_tags, self.use_alpha_as_weight = bool(shuffle_tags), bool(use_alpha_as_weight)
        self.filename_pattern = cap.compile_filename_regex(filename_regex)
        self.filename_join = str(filename_join)
        self.seed = int(seed)
        self.bucket_spec = _bucket_spec(buckets, size, bucket_step, min_bucket, max_bucket)

        self.templates = self._choose_templates(templates, template_file)
        self.images, placeholders = self._load(data_root, placeholder_token)
        if self.per_image_tokens and self.num_images > len(PER_IMAGE_TOKENS):
            raise ConfigError(
                f"per_image_tokens supports at most {len(PER_IMAGE_TOKENS)} images, the data has "
                f"{self.num_images}; turn per_image_tokens off or use fewer images"
            )
        for placeholder in dict.fromkeys(placeholders):
            cap.placeholder_in_templates(placeholder, self.templates)
            if self.per_image_tokens:
                cap.placeholder_in_templates(placeholder, self.dual_templates)
        # The caption word for each image; the coarse class rides along in front, as in the paper.
        prefix = f"{coarse_class_text} " if coarse_class_text else ""
        self.image_placeholders = [prefix + p for p in placeholders]
        buckets = make_buckets(self.bucket_spec) if self.bucket_spec else None
        self.geometry = [self._geometry(image, buckets) for image in self.images]
        self.set_batch_size(1)
        self._cache: dict[tuple[int, bool], tuple[torch.Tensor, torch.Tensor]] = {}

    # ---- construction -------------------------------------------------------------------------
    def _choose_templates(self, templates: Sequence[str] | None, template_file: str | None) -> list[str]:
        if templates is not None and template_file:
            raise ConfigError("pass either templates or template_file, not both")
        if template_file:
            return cap.read_template_file(template_file)
        if templates is not None:
            return cap.validate_templates(templates, "templates")
        return list(self.default_templates)

    def _geometry(self, image: TrainingImage, buckets: list[tuple[int, int]] | None) -> CoverCrop:
        width, height = image.rgb.size  # upright: EXIF orientation already applied
        if buckets is None:
            return square_geometry(height, width, self.size, self.center_crop)
        return cover_crop(height, width, nearest_bucket(height, width, buckets))

    def _load(self, data_root: Any, placeholder_token: Any) -> tuple[list[TrainingImage], list[str]]:
        roots, tokens = [str(r) for r in _as_list(data_root)], [str(t) for t in _as_list(placeholder_token)]
        if not roots:
            raise ConfigError("data_root is empty; pass the folder with your training images")
        if not tokens or any(not t.strip() for t in tokens):
            raise ConfigError(f"placeholder_token {placeholder_token!r} is empty; use e.g. '*' or '<my-cat>'")
        if len(tokens) == 1:
            tokens = tokens * len(roots)
        if len(tokens) != len(roots):
            raise ConfigError(
                f"{len(roots)} data_root folders but {len(tokens)} placeholder tokens; give one per folder"
            )
        images, placeholders = [], []
        for root, token in zip(roots, tokens):
            found = load_training_images(root)
            images += found
            placeholders += [token] * len(found)
        return images, placeholders

    # ---- sizes ----------------------------------------------------------------------------------
    @property
    def num_images(self) -> int:
        return len(self.images)

    def __len__(self) -> int:
        return self.num_images * self.repeats if self.train else self.num_images

    def set_seed(self, seed: int) -> None:
        """Change the stream of choices; cached pixels stay valid (they depend only on image and flip)."""
        self.seed = int(seed)

    def set_batch_size(self, batch_size: int) -> None:
        """With buckets, each run of `batch_size` consecutive samples is one batch of one bucket (the data
        module passes its batch size); square images need no grouping."""
        self.batch_size = _positive_int("batch_size", batch_size)
        self._order = BucketOrder([g.target for g in self.geometry], self.batch_size) if self.bucket_spec else None

    @property
    def bucket_sizes(self) -> list[tuple[int, int]]:
        """Each image's trained (height, width)."""
        return [g.target for g in self.geometry]

    # ---- the choices of sample k ------------------------------------------------------------------
    def image_index(self, k: int) -> int:
        if not self.train:
            return k % self.num_images
        if self._order is not None:
            return self._order.image_index(self.seed, k)
        epoch, position = divmod(k, self.num_images)
        return epoch_permutation(self.seed, epoch, self.num_images)[position]

    def caption(self, k: int, image_index: int) -> str:
        rng = sample_rng(self.seed, k, CAPTION)
        placeholder = self.image_placeholders[image_index]
        mix = rng.random()
        if self.per_image_tokens and mix < self.mixing_prob:
            template = self.dual_templates[int(rng.integers(len(self.dual_templates)))]
            return cap.fill_template(template, placeholder, image_token=PER_IMAGE_TOKENS[image_index])
        template = self.templates[int(rng.integers(len(self.templates)))]
        filewords = ""
        if cap.FILEWORDS in template:
            filewords = cap.process_tags(self.filewords(image_index), rng, self.shuffle_tags, self.tag_drop_out)
        return cap.fill_template(template, placeholder, filewords)

    def filewords(self, image_index: int) -> str:
        """The sidecar caption if there is one, else the words of the file name."""
        image = self.images[image_index]
        if image.caption is not None:
            return image.caption
        return cap.filename_words(image.path, self.filename_pattern, self.filename_join)

    def describe(self, k: int) -> ItemPlan:
        """Everything about sample k except the pixels (cheap: used by --debug_dataset)."""
        k = int(k)
        if k < 0:
            raise IndexError(f"sample index must be >= 0, got {k}")
        index = self.image_index(k)
        flip = self.train and self.flip_p > 0 and bool(sample_rng(self.seed, k, FLIP).random() < self.flip_p)
        return ItemPlan(k, self.caption(k, index), index, flip)

    def debug_items(self, n: int) -> list[tuple[int, str, int, bool]]:
        """(k, caption, image_index, flip) of the first n samples."""
        return [tuple(self.describe(k)) for k in range(int(n))]

    # ---- pixels ---------------------------------------------------------------------------------
    def pixels(self, image_index: int, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(image [3, H, W] in [-1, 1], weight [1, H, W] in [0, 1]), cached: always identical per key. H, W are
        the image's bucket, or size x size."""
        key = (int(image_index), bool(flip))
        if key not in self._cache:
            if flip:
                image, weight = self.pixels(image_index, False)
                self._cache[key] = (image.flip(-1), weight.flip(-1))
            else:
                src = self.images[image_index]
                image = image_tensor(self._resize(src.rgb, image_index))
                mask = None
                if src.alpha is not None and self.use_alpha_as_weight:
                    mask = self._resize(src.alpha, image_index)
                self._cache[key] = (image, mask_tensor(mask, self.geometry[image_index].target))
        return self._cache[key]

    def _resize(self, image: Image.Image, image_index: int) -> Image.Image:
        if self.bucket_spec is None:
            return square_resize(image, self.size, self.center_crop, self.resample)
        return cover_resize(image, self.geometry[image_index], self.resample)

    def size_conditioning(self, image_index: int, flip: bool) -> dict[str, torch.Tensor]:
        """SDXL's size inputs of an item: the photo's (h, w), the crop's (top, left), the trained (h, w)."""
        crop = self.geometry[image_index].flipped() if flip else self.geometry[image_index]
        return {
            "original_size_as_tuple": torch.tensor(crop.original),
            "crop_coords_top_left": torch.tensor(crop.top_left),
            "target_size_as_tuple": torch.tensor(crop.target),
        }

    def __getitem__(self, k: int) -> dict[str, Any]:
        plan = self.describe(k)
        image, weight = self.pixels(plan.image_index, plan.flip)
        item = {
            "image": image.clone(),
            "caption": plan.caption,
            "image_index": plan.image_index,
            "flip": plan.flip,
            "k": plan.k,
            **self.size_conditioning(plan.image_index, plan.flip),
        }
        if self.use_alpha_as_weight:
            item["weight"] = weight.clone()  # ones for opaque images, so batches still collate
        return item


def _bucket_spec(buckets: Any, size: int, step: Any, min_bucket: Any, max_bucket: Any) -> BucketSpec | None:
    if not isinstance(buckets, bool):
        raise ConfigError(f"buckets must be true or false, got {buckets!r}")
    if not buckets:
        return None
    step = _positive_int("bucket_step", step)
    low = _positive_int("min_bucket", min_bucket) if min_bucket is not None else max(step, size // 2 // step * step)
    high = _positive_int("max_bucket", max_bucket) if max_bucket is not None else size * 2 // step * step
    return BucketSpec(size, step, low, high)


class PersonalizedObject(PersonalizedBase):
    """The object dataset under an explicit name (same as `PersonalizedBase`)."""
