"""Training previews with the user's prompt, negative prompt and seed (ImageLogger's log_images_kwargs)."""

from __future__ import annotations

import pytest
import torch
from sd_helpers import ROOT

from ldm.model_loading import load_model_from_config
from ldm.training.log_images import log_images

FINETUNE = ROOT / "configs" / "toy-world" / "finetune.yaml"
WEIGHTS = ROOT / "models" / "toy-world" / "toy-world.safetensors"


@pytest.fixture(scope="module")
def toy():
    return load_model_from_config(str(FINETUNE), WEIGHTS)


def _batch() -> dict:
    g = torch.Generator().manual_seed(0)
    return {"image": torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, "caption": ["a photo of a *", "a small *"]}


def _grids(model, **kwargs) -> dict[str, torch.Tensor]:
    return log_images(model, _batch(), n=3, ddim_steps=3, unconditional_guidance_scale=5.0, **kwargs)


def test_a_preview_prompt_draws_n_samples_of_that_prompt(toy):
    plain = _grids(toy)
    preview = _grids(toy, prompt="a photo of a * on a red background")
    assert plain["samples"].shape[0] == 2  # the batch's captions: as many as the batch holds
    assert preview["samples"].shape[0] == 3  # the preview prompt: n samples of it
    assert preview["inputs"].shape[0] == 2
    assert not torch.allclose(preview["samples"][:2], plain["samples"])


def test_the_negative_prompt_changes_only_the_guided_grid_and_the_seed_fixes_it(toy):
    prompt = "a photo of a *"
    base = _grids(toy, prompt=prompt, seed=5)
    negative = _grids(toy, prompt=prompt, negative_prompt="a blue background", seed=5)
    assert torch.equal(base["samples"], negative["samples"])  # unguided: no negative prompt
    assert not torch.allclose(base["samples_scaled"], negative["samples_scaled"])
    assert torch.equal(_grids(toy, prompt=prompt, seed=5)["samples_scaled"], base["samples_scaled"])
    assert not torch.allclose(_grids(toy, prompt=prompt, seed=6)["samples_scaled"], base["samples_scaled"])
