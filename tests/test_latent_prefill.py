"""Training latents encoded before the first step (a speed change): the steps then see exactly the values the
lazy cache would have computed, and no step runs the VAE."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf
from train_helpers import TINY_FINETUNE, make_concept

from ldm.training.config import TrainingConfig
from ldm.training.objective import PREFILL_ALWAYS, TextualInversionObjective, latent_keys


@pytest.fixture(scope="module")
def model_and_data(tiny_ckpt, tmp_path_factory):
    from ldm.model_loading import load_model_from_config
    from ldm.util import instantiate_from_config

    cfg = OmegaConf.load(TINY_FINETUNE)
    cfg.data.params.train.params.data_root = str(make_concept(tmp_path_factory.mktemp("c") / "c", n=3))
    cfg.data.params.batch_size = 2
    data = instantiate_from_config(cfg.data)
    data.setup("fit")
    return load_model_from_config(cfg, tiny_ckpt), data


def _objective(model, mode: str) -> tuple[TextualInversionObjective, list[int]]:
    objective = TextualInversionObjective(copy.deepcopy(model), TrainingConfig(latent_sampling=mode, seed=5))
    objective.prepare_networks()
    encodes: list[int] = []
    inner = objective._encode

    def counting(images):
        encodes.append(images.shape[0])
        return inner(images)

    objective._encode = counting
    return objective, encodes


def _losses_and_grads(objective, batches):
    out = []
    for batch in batches:
        loss, _ = objective(batch)
        loss.backward()
        (vector,) = objective.model.embedding_manager.embedding_parameters()
        out.append((loss.detach().clone(), vector.grad.clone()))
        vector.grad = None
    return out


# "deterministic" takes the path of "once", storing the posterior mean instead of a seeded draw.
@pytest.mark.parametrize("mode", ["once", "random"])
def test_prefilled_steps_equal_the_lazy_steps(model_and_data, mode):
    model, data = model_and_data
    batches = list(data.train_dataloader(num_batches=4))
    lazy, lazy_encodes = _objective(model, mode)
    early, early_encodes = _objective(model, mode)
    keys = latent_keys(data.train_dataset)
    assert keys == [(i, f) for i in range(3) for f in (0, 1)]
    assert early.prefill_latents(data.train_dataset, samples=12) == len(keys) == len(early_encodes)
    expected = _losses_and_grads(lazy, batches)
    got = _losses_and_grads(early, batches)
    assert len(early_encodes) == len(keys)  # the steps themselves never ran the VAE
    assert 0 < len(lazy_encodes) <= len(keys)
    for (loss_a, grad_a), (loss_b, grad_b) in zip(expected, got):
        assert torch.equal(loss_a, loss_b) and torch.equal(grad_a, grad_b)


class _Folder:
    """A personalized dataset's shape without images: `pixels` must not be called when prefill is skipped."""

    train, flip_p = True, 0.0

    def __init__(self, n: int):
        self.num_images = n

    def pixels(self, index: int, flip: bool):
        raise AssertionError("encoded a dataset it should have left to the lazy cache")


def test_prefill_skips_datasets_larger_than_the_run_visits(model_and_data):
    objective, encodes = _objective(model_and_data[0], "once")
    big = _Folder(PREFILL_ALWAYS + 1)
    assert latent_keys(big) == [(i, 0) for i in range(PREFILL_ALWAYS + 1)]  # no flips: one key per image
    assert objective.prefill_latents(big, samples=100) == 0 and encodes == []
    assert latent_keys(object()) == []  # not a personalized dataset: nothing to prefill
