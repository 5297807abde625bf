"""Unit checks of the training parts: LR schedules, loss weighting, per-step RNG, latent cache, precision,
gradient checkpointing, NaN handling, --embedding_manager_ckpt and the placeholder reaching captions."""

from __future__ import annotations

import copy

import pytest
import torch
from train_helpers import TINY_FINETUNE, make_concept, only_run_dir, run_main, train_args

from ldm.errors import ConfigError
from ldm.training.latent_cache import LatentCache
from ldm.training.loss import diffusion_loss, min_snr_weights
from ldm.training.lr_schedule import a1111_schedule, make_schedule, parse_a1111_schedule
from ldm.training.step_rng import step_generator


def test_a1111_schedule_string():
    assert parse_a1111_schedule("0.005:100, 1e-3:1000, 1e-5") == [(0.005, 100), (0.001, 1000), (1e-5, None)]
    lr = a1111_schedule("0.005:100, 1e-3:1000, 1e-5")
    assert [lr(s) for s in (0, 99, 100, 999, 1000, 50000)] == [0.005, 0.005, 0.001, 0.001, 1e-5, 1e-5]
    assert a1111_schedule("0.01:10, 0.002:20")(25) == 0.002  # past the last bound keeps the last rate


@pytest.mark.parametrize("text", ["", "fast", "0.005:100, oops", "0.005, 1e-3:100", "0.01:100, 0.02:50", "-1e-3"])
def test_bad_schedule_strings(text):
    with pytest.raises(ConfigError) as err:
        parse_a1111_schedule(text)
    assert "\n" not in str(err.value)


def test_warmup_cosine_and_constant():
    cos = make_schedule("cosine", 1e-2, 100, warmup_steps=10, min_lr=1e-4)
    assert cos(0) == pytest.approx(1e-3) and cos(9) == pytest.approx(1e-2)
    assert cos(10) == pytest.approx(1e-2) and cos(100) == pytest.approx(1e-4)
    assert cos(55) == pytest.approx((1e-2 + 1e-4) / 2)
    assert make_schedule("constant", 3e-3, 100)(57) == 3e-3
    with pytest.raises(ConfigError, match="unknown"):
        make_schedule("linear-ish", 1e-3, 100)


def test_min_snr_weights_and_alpha_mask():
    from ldm.models.diffusion.schedule import make_beta_schedule, schedule_buffers

    ac = schedule_buffers(make_beta_schedule("linear", 1000, 0.00085, 0.012))["alphas_cumprod"]
    t = torch.tensor([0, 500, 999])
    w = min_snr_weights(ac, t, gamma=5.0)
    snr = ac[t] / (1 - ac[t])
    assert torch.allclose(w, torch.clamp(snr, max=5.0) / snr)
    assert w[0] < 1 and w[2] == 1  # high-SNR (early) steps are down-weighted, noisy ones kept
    eps, pred = torch.zeros(2, 4, 8, 8), torch.zeros(2, 4, 8, 8)
    pred[:, :, :, 4:] = 1.0  # error only in the right half
    mask = torch.zeros(2, 1, 64, 64)
    mask[..., :32] = 1.0  # alpha keeps only the left half
    assert diffusion_loss(pred, eps, t[:2], ac, mask=mask).item() == 0.0
    assert diffusion_loss(pred, eps, t[:2], ac).item() == pytest.approx(0.5)


def test_step_generators_are_pure_functions_of_seed_step_rank():
    a = torch.randn(4, generator=step_generator(1, 10, 0))
    assert torch.equal(a, torch.randn(4, generator=step_generator(1, 10, 0)))
    for other in (step_generator(2, 10, 0), step_generator(1, 11, 0), step_generator(1, 10, 1)):
        assert not torch.equal(a, torch.randn(4, generator=other))


def test_latent_cache_encodes_each_key_once(tiny_model):
    calls = []

    def encode(x):
        calls.append(x.shape[0])
        return tiny_model.first_stage_model.encode(x)

    images = torch.rand(2, 3, 64, 64) * 2 - 1
    g = torch.Generator().manual_seed(0)
    for mode in ("once", "deterministic", "random"):
        calls.clear()
        cache = LatentCache(mode, seed=3)
        first = cache.get([(0, 0), (1, 0)], images, encode, g)
        second = cache.get([(0, 0), (1, 0)], images, encode, g)
        assert len(calls) == 2 and len(cache) == 2  # one encode per key, then cached
        assert torch.equal(first, second) == (mode != "random")
    with pytest.raises(ConfigError, match="latent_sampling"):
        LatentCache("sometimes")


def _objective_grad(model, batch, **config_changes):
    from ldm.training.config import TrainingConfig
    from ldm.training.objective import TextualInversionObjective

    model = copy.deepcopy(model)
    cfg = TrainingConfig(**config_changes)
    obj = TextualInversionObjective(model, cfg)
    obj.prepare_networks()
    loss, _ = obj(batch)
    loss.backward()
    (param,) = model.embedding_manager.embedding_parameters()
    return loss.detach(), param.grad.clone(), param.dtype


@pytest.fixture(scope="module")
def ti_model_and_batch(tiny_ckpt, tmp_path_factory):
    from omegaconf import OmegaConf

    from ldm.model_loading import load_model_from_config
    from ldm.util import instantiate_from_config

    cfg = OmegaConf.load(TINY_FINETUNE)
    cfg.data.params.train.params.data_root = str(make_concept(tmp_path_factory.mktemp("c") / "c"))
    model = load_model_from_config(cfg, tiny_ckpt)
    data = instantiate_from_config(cfg.data)
    data.setup("fit")
    return model, next(iter(data.train_dataloader()))


def test_low_precision_networks_keep_fp32_vectors_and_close_gradients(ti_model_and_batch):
    model, batch = ti_model_and_batch
    loss32, grad32, _ = _objective_grad(model, batch)
    loss16, grad16, dtype = _objective_grad(model, batch, network_precision="bf16")
    assert dtype == torch.float32 and grad16.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(grad32.flatten(), grad16.flatten(), dim=0)
    assert abs(loss16 - loss32) / loss32 < 0.05 and cos > 0.95, (loss32, loss16, cos)


def test_optimised_step_matches_the_fp32_reference_gradient(ti_model_and_batch):
    # The fast path's switches at once: bf16 frozen networks with fp32 vectors and a channels_last UNet.
    model, batch = ti_model_and_batch
    loss32, grad32, _ = _objective_grad(model, batch)
    loss_fast, grad_fast, dtype = _objective_grad(model, batch, network_precision="bf16", channels_last=True)
    assert dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(grad32.flatten(), grad_fast.flatten(), dim=0)
    rel = (grad_fast.norm() - grad32.norm()).abs() / grad32.norm()
    assert abs(loss_fast - loss32) / loss32 < 0.05 and cos > 0.95 and rel < 0.1, (loss32, loss_fast, cos, rel)
    _, grad_cl32, _ = _objective_grad(model, batch, channels_last=True)
    torch.testing.assert_close(grad_cl32, grad32, atol=1e-6, rtol=1e-4)  # memory layout alone changes nothing


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_group_norm_matches_the_fp32_computation(dtype):
    # GroupNorm32 skips the fp32 upcast for half inputs (the kernels accumulate in fp32 already).
    from ldm.modules.diffusionmodules.util import normalization

    g = torch.Generator().manual_seed(0)
    norm = normalization(64)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(64, generator=g) + 0.5)
        norm.bias.copy_(torch.randn(64, generator=g))
    x = (torch.randn(2, 64, 8, 8, generator=g) * 3 + 5).to(dtype)
    reference = torch.nn.functional.group_norm(x.float(), 32, norm.weight, norm.bias, norm.eps)
    out = norm.to(dtype)(x)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), reference, atol=2e-2, rtol=1e-2)


def test_gradient_checkpointing_gives_the_same_gradient(ti_model_and_batch):
    model, batch = ti_model_and_batch
    _, plain, _ = _objective_grad(model, batch)
    _, checkpointed, _ = _objective_grad(model, batch, gradient_checkpointing=True)
    assert torch.allclose(plain, checkpointed, atol=1e-6)


def test_nan_loss_stops_and_keeps_last_good_embedding(tiny_ckpt, tmp_path):
    from ldm.embeddings import read_embedding_file

    data = make_concept(tmp_path / "c")
    # The largest learning rate accepted blows the vectors up after some steps (step ~23), and the loss goes NaN.
    result = run_main(train_args(tiny_ckpt, data, tmp_path / "logs", 40, ("model.base_learning_rate=1000",)))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: step ") and "NaN" in lines[0] and "learning rate" in lines[0], lines
    run_dir = only_run_dir(tmp_path / "logs")
    assert (run_dir / "checkpoints" / "embeddings.pt").is_file()  # the last good embedding
    for f in (run_dir / "checkpoints").glob("embeddings*.pt"):
        assert torch.isfinite(read_embedding_file(f)[0].vectors).all(), f
    for f in (run_dir / "checkpoints").glob("last.ckpt"):  # a resumable state from before, if any
        assert torch.load(f, weights_only=True)["global_step"] < 40


@pytest.mark.slow  # a full main.py run (12 s): the default suite keeps its time under ~10 min
def test_start_from_embedding_file_and_placeholder_reaches_captions(tiny_ckpt, tmp_path):
    from ldm.embeddings import LoadedEmbedding, read_embedding_file, write_embedding_file

    data = make_concept(tmp_path / "c")
    start = tmp_path / "start.safetensors"  # A1111/kohya emb_params format
    write_embedding_file(start, LoadedEmbedding("mine", torch.full((1, 32), 0.25)))
    args = train_args(
        tiny_ckpt,
        data,
        tmp_path / "logs",
        4,
        ("--placeholder_string", "<my-cat>", "--embedding_manager_ckpt", str(start)),
    )
    shown = run_main([*args, "--debug_dataset"])
    assert shown.returncode == 0 and "<my-cat>" in shown.stdout
    result = run_main(args)
    assert result.returncode == 0, result.stderr[-2000:]
    snap = read_embedding_file(only_run_dir(tmp_path / "logs") / "checkpoints" / "embeddings_gs-4.pt")[0]
    # Four AdamW steps of lr 5e-2 move each coordinate by at most ~0.2 from the file's 0.25.
    assert (snap.vectors - 0.25).abs().max() < 0.25 and not torch.equal(snap.vectors, torch.full((1, 32), 0.25))


def test_gpus_flag_means_indices():
    from ldm.training.launch import parse_gpus

    assert parse_gpus("0,") == [0] and parse_gpus("0") == [0] and parse_gpus("0,1") == [0, 1]
    assert parse_gpus(None) is None and parse_gpus("") is None
    for bad in ("zero", "0,x", "-1", "1.5"):
        with pytest.raises(ConfigError, match="--gpus"):
            parse_gpus(bad)


@pytest.mark.slow  # a full main.py run (12 s): the default suite keeps its time under ~10 min
def test_two_concepts_in_one_run(tiny_ckpt, tmp_path):
    a, b = make_concept(tmp_path / "a", n=2, seed=1), make_concept(tmp_path / "b", n=2, seed=2)
    args = [
        "--base",
        str(TINY_FINETUNE),
        "-t",
        "--actual_resume",
        str(tiny_ckpt),
        "-l",
        str(tmp_path / "logs"),
        "--data_root",
        str(a),
        "--placeholder_string",
        "<aa>",
        "--init_word",
        "cat",
        "--data_root",
        str(b),
        "--placeholder_string",
        "<bb>",
        "--init_word",
        "dog",
        "--max_steps",
        "4",
    ]
    shown = run_main([*args, "--debug_dataset"])
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "<aa>" in shown.stdout and "<bb>" in shown.stdout
    result = run_main(args)
    assert result.returncode == 0, result.stderr[-2000:]
    from ldm.embeddings import read_embedding_file

    terms = read_embedding_file(only_run_dir(tmp_path / "logs") / "checkpoints" / "embeddings.pt")
    assert sorted(t.token for t in terms) == ["<aa>", "<bb>"]


def test_network_dtype_names_every_precision_and_refuses_others():
    from ldm.training.config import NETWORK_PRECISIONS, network_dtype

    assert [network_dtype(p) for p in NETWORK_PRECISIONS] == [torch.float32, torch.bfloat16, torch.float16]
    with pytest.raises(ConfigError, match="'bf32'.*fp32, bf16, fp16"):
        network_dtype("bf32")
