"""Textual inversion end to end on the tiny SDXL-shaped model: main.py trains one word in BOTH text encoders
(each part started from the init word's row in its own encoder) on photos of mixed aspect in buckets, only
the vectors change, every step's vector carries the batch's real sizes and crops, the word is written as a
clip_l/clip_g file and draws in invoke.py; bad inputs are one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from sd_helpers import ROOT
from train_helpers import (
    bare_trainer,
    changed_tensors,
    make_mixed_photos,
    only_run_dir,
    run_invoke,
    run_main,
    trainable_model,
)

TINY_SDXL_FINETUNE = ROOT / "tests" / "fixtures" / "tiny-sdxl-finetune.yaml"
TINY_SDXL = ROOT / "tests" / "fixtures" / "tiny-sdxl.yaml"
STEPS = 4  # one snapshot and one sample grid (every 4 steps in the fixture config)


def sdxl_train_args(ckpt: Path, data: Path, logdir: Path, *extra: str, base: Path = TINY_SDXL_FINETUNE) -> list[str]:
    return [
        *("--base", str(base), "-t", "--actual_resume", str(ckpt), "-n", "x"),
        *("--data_root", str(data), "--init_word", "cat", "-l", str(logdir)),
        *("--max_steps", str(STEPS), "--scale_lr", "false", "-s", "7", *extra),
    ]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_mixed_photos(tmp_path_factory.mktemp("data") / "mixed")


@pytest.fixture(scope="module")
def run_dir(tiny_sdxl_ckpt, photos, tmp_path_factory) -> Path:
    logdir = tmp_path_factory.mktemp("logs")
    result = run_main(sdxl_train_args(tiny_sdxl_ckpt, photos, logdir))
    assert result.returncode == 0, result.stderr[-3000:]
    return only_run_dir(logdir)


def finetune_config(photos: Path):
    cfg = OmegaConf.load(TINY_SDXL_FINETUNE)
    cfg.data.params.train.params.data_root = str(photos)
    cfg.model.params.personalization_config.params.initializer_words = ["cat"]
    return cfg


def embedding_file(run_dir: Path) -> Path:
    (path,) = [p for p in (run_dir / "checkpoints").glob("embeddings.*") if p.suffix != ".tmp"]
    return path


def init_rows(model, word: str = "cat") -> torch.Tensor:
    """The init word's token-embedding row in each text encoder, concatenated as a learned vector is."""
    rows = []
    for encoder in model.text_encoders:
        (token,) = encoder.tokenizer(word, add_special_tokens=False)["input_ids"]
        rows.append(encoder.token_embedding.weight[token].float())
    return torch.cat(rows)


def test_main_trains_both_encoders_parts_of_the_word(run_dir, tiny_sdxl_model):
    from safetensors.torch import load_file

    from ldm.embeddings import read_embedding_file

    path = embedding_file(run_dir)
    (term,) = read_embedding_file(path)
    width = tiny_sdxl_model.text_width
    assert term.vectors.shape == (1, width) and torch.isfinite(term.vectors).all()
    init = init_rows(tiny_sdxl_model)
    for encoder in tiny_sdxl_model.text_encoders:
        part, start = term.vectors[0, encoder.columns], init[encoder.columns]
        moved = (part - start).abs().max()
        assert 0 < moved < 0.5, (encoder.embedding_key, moved)  # trained, from this encoder's init row
    # The file people share (A1111, ComfyUI, kohya): clip_l and clip_g, each its encoder's width; a snapshot
    # and sample grids at step 4, as on SD 1.x.
    assert path.name == "embeddings.safetensors" and (path.parent / "embeddings_gs-4.safetensors").is_file()
    grids = {p.name.split("_gs-")[0] for p in (run_dir / "images" / "train").glob(f"*_gs-{STEPS:06d}_*.png")}
    assert grids == {"inputs", "samples", "samples_scaled", "conditioning"}, grids
    stored = load_file(path)
    assert {k: tuple(v.shape) for k, v in stored.items()} == {
        e.embedding_key: (1, e.width) for e in tiny_sdxl_model.text_encoders
    }


def test_only_the_vectors_change_and_each_step_sees_its_batch_sizes(tiny_sdxl_ckpt, photos, tmp_path):
    """Fit a few steps in-process: every state tensor but the learned vectors stays; each step's vector
    holds the size embedding of its batch's own original sizes, crops and bucket, one bucket per batch."""
    from ldm.util import instantiate_from_config

    cfg = finetune_config(photos)
    model = trainable_model(cfg, tiny_sdxl_ckpt)
    seen = []
    apply_model = model.apply_model

    def recording(x, t, cond):
        seen.append((tuple(x.shape[-2:]), cond["vector"].detach().clone()))
        return apply_model(x, t, cond)

    model.apply_model = recording
    data = instantiate_from_config(cfg.data)
    changed = changed_tensors(model, lambda: bare_trainer(tmp_path, 3).fit(model, data))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed and set(changed) <= trainable, (changed, trainable)
    assert not any(k.startswith(("model.", "first_stage_model.", "conditioner.")) for k in changed), changed

    # Replay the same batches: the recorded vectors' size part is the batches' own.
    sizes = sum(2 * e.outdim for e in model.conditioner.size_embedders)  # the vector's size part, after pooled
    batches = list(data.train_dataloader(num_batches=len(seen)))
    for (latent_hw, vector), batch in zip(seen, batches):
        target = batch["target_size_as_tuple"]
        assert (target == target[0]).all()  # one bucket per batch
        assert latent_hw == tuple(s // model.latent_factor for s in target[0].tolist())
        expected = model.conditioner.vector(
            vector[:, :-sizes],
            batch["original_size_as_tuple"],
            batch["crop_coords_top_left"],
            target,
        )
        torch.testing.assert_close(vector, expected)
    crops = torch.cat([b["crop_coords_top_left"] for b in batches])
    assert crops.abs().sum() > 0  # some photo was cropped: the default (0, 0) would not do


def test_the_trained_word_draws_in_invoke(run_dir, tiny_sdxl_ckpt, tmp_path):
    import numpy as np
    from PIL import Image

    commands = ['"a photo of *" -S 5 -A ddim', '"a photo of cat" -S 5 -A ddim', "q"]
    result = run_invoke(tiny_sdxl_ckpt, TINY_SDXL, commands, tmp_path, "--embedding_path", str(embedding_file(run_dir)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert not [line for line in result.stdout.splitlines() if line.startswith("** ")], result.stdout
    word, init = tmp_path / "out" / "000000.5.png", tmp_path / "out" / "000001.5.png"
    pixels = [np.asarray(Image.open(p).convert("RGB"), dtype=np.int16) for p in (word, init)]
    assert pixels[0].shape == (64, 64, 3) and pixels[0].std() > 0
    assert np.abs(pixels[0] - pixels[1]).max() > 0  # the learned vectors, not the init word's, reached the UNet


def _refusal(argv: list[str], logdir: Path) -> str:
    """What main.py's training path refuses `argv` with, run in-process (main.py prints this exception as its
    one `error:` line through ldm.cli.run_cli, exit code 2), checking that nothing was written."""
    from ldm.errors import LdmUserError
    from ldm.training.run import train
    from main import build_parser

    args, overrides = build_parser().parse_known_args(argv)
    with pytest.raises(LdmUserError) as err:
        train(args, overrides)
    assert not logdir.exists() or not any(logdir.iterdir())
    assert "\n" not in str(err.value)
    return str(err.value)


def test_an_sd1_checkpoint_with_the_sdxl_config_names_the_sd1_config(tiny_ckpt, photos, tmp_path):
    message = _refusal(sdxl_train_args(tiny_ckpt, photos, tmp_path / "logs"), tmp_path / "logs")
    assert "SD 1.x" in message and "v1-finetune.yaml" in message, message


def test_an_sdxl_checkpoint_with_the_sd1_config_names_the_sdxl_config(tiny_sdxl_ckpt, photos, tmp_path):
    args = sdxl_train_args(tiny_sdxl_ckpt, photos, tmp_path / "logs", base=ROOT / "tests/fixtures/tiny-finetune.yaml")
    message = _refusal(args, tmp_path / "logs")
    assert "SDXL" in message and "sdxl-finetune.yaml" in message, message


def test_a_bad_bucket_setting_is_one_line(tiny_sdxl_ckpt, photos, tmp_path):
    override = "data.params.train.params.max_bucket=100"
    message = _refusal(sdxl_train_args(tiny_sdxl_ckpt, photos, tmp_path / "logs", override), tmp_path / "logs")
    assert "max_bucket 100 must be a positive multiple of bucket_step 32" in message, message


def test_debug_dataset_shows_each_samples_bucket(photos):
    """--debug_dataset (no weights needed) lists the bucket of every sample; consecutive pairs (batches of 2)
    share one."""
    from ldm.training.run import debug_dataset
    from main import build_parser

    args, overrides = build_parser().parse_known_args(
        ["--base", str(TINY_SDXL_FINETUNE), "--data_root", str(photos), "--debug_dataset", "-s", "7"]
    )
    lines = debug_dataset(args, overrides, n=8)
    sizes = [line.split(" size=")[1].split()[0] for line in lines]
    assert len(set(sizes)) >= 2 and all(sizes[i] == sizes[i + 1] for i in range(0, 8, 2)), lines
    for size in sizes:
        assert all(int(side) % 32 == 0 for side in size.split("x")), size


@pytest.mark.parametrize("name", ["sdxl-finetune.yaml", "sdxl-finetune_style.yaml"])
def test_the_shipped_sdxl_configs_are_full_size_sdxl(name):
    """Checked as main.py checks a config, then built on the meta device (no memory): the SDXL base 1.0
    shapes, and the same networks as the inference config."""
    from ldm.model_loading import _build_on_meta
    from ldm.training.launch import check_inputs
    from main import build_parser

    path = ROOT / "configs" / "stable-diffusion" / name
    args, overrides = build_parser().parse_known_args(
        ["--base", str(path), "--data_root", str(ROOT), "--debug_dataset"]
    )
    _, config = check_inputs(args, overrides, training=False)
    assert config.data.params.train.params.buckets is True and config.data.params.train.params.size == 1024
    model = _build_on_meta(config.model)
    assert model.family == "sdxl" and model.text_width == 2048 and model.uses_vector
    assert [e.embedding_key for e in model.text_encoders] == ["clip_l", "clip_g"]
    assert model.unet.label_emb[0][0].weight.shape == (1280, 2816) and model.scale_factor == 0.13025
    assert sum(p.numel() for p in model.unet.parameters()) == 2_567_463_684  # SDXL base 1.0's UNet
    inference = OmegaConf.load(ROOT / "configs" / "stable-diffusion" / "sdxl-base-inference.yaml")
    ours, theirs = OmegaConf.to_container(config.model.params), OmegaConf.to_container(inference.model.params)
    for key in ("network_config", "conditioner_config", "first_stage_config", "scale_factor"):
        assert ours[key] == theirs[key], key


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_the_sdxl_word_in_buckets(tiny_sdxl_ckpt, photos, tmp_path):
    """Two gloo ranks read interleaved batches of the bucketed stream (each batch one bucket, on either rank)
    and keep one word: the vectors are synchronised and written once."""
    logs = tmp_path / "logs"
    result = run_main(sdxl_train_args(tiny_sdxl_ckpt, photos, logs, "lightning.trainer.devices=2"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vectors synchronised across 2 ranks" in result.stdout
    run_dir = only_run_dir(logs)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == STEPS
    from ldm.embeddings import read_embedding_file

    (term,) = read_embedding_file(embedding_file(run_dir))
    assert term.vectors.shape[1] == 96 and torch.isfinite(term.vectors).all()
