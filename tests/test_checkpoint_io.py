"""Loading SD checkpoints: every format and precision, the EMA switch, legacy Lightning extras,
untrusted pickles, and the one-line errors for files that do not fit."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file
from sd_helpers import SD_CONFIG, TINY_CONFIG

from ldm.errors import CheckpointError, ConfigError, UnsafeCheckpointError
from ldm.model_loading import POSITION_IDS, build_model, load_model_from_config
from ldm.safe_load import read_state_dict


def _latent_inputs(model):
    g = torch.Generator().manual_seed(3)
    ctx_dim = model.model.diffusion_model.context_dim
    return torch.randn(1, 4, 8, 8, generator=g), torch.tensor([321]), torch.randn(1, 77, ctx_dim, generator=g)


@torch.no_grad()
def _outputs(model):
    x, t, ctx = _latent_inputs(model)
    ids = torch.tensor([[49406, 320, 1125, 539, 265] + [49407] * 72])
    return model.apply_model(x, t, ctx), model.cond_stage_model.encode_tokens(ids), model.decode_first_stage(x)


def _legacy_lightning_ckpt(sd: dict) -> dict:
    """What a CompVis training run writes: Lightning bookkeeping around the weights."""
    from pytorch_lightning.callbacks.model_checkpoint import ModelCheckpoint

    return {
        "epoch": 6,
        "global_step": 470000,
        "pytorch-lightning_version": "1.4.2",
        "state_dict": sd,
        "callbacks": {
            ModelCheckpoint: {
                "monitor": None,
                "best_model_score": None,
                "best_model_path": "/fsx/last.ckpt",
                "current_score": None,
            }
        },
    }


def _with_sd_extras(model) -> dict:
    """The model's state dict plus what real SD v1 files also carry: EMA copy and CLIP position ids."""
    sd = dict(model.state_dict())
    sd[POSITION_IDS] = torch.arange(77)[None]
    for key, value in model.model.state_dict().items():
        sd["model_ema." + key.replace(".", "")] = value + 1.0  # distinguishable from the live weights
    sd["model_ema.decay"] = torch.tensor(0.9999)
    sd["model_ema.num_updates"] = torch.tensor(470000)
    return sd


FORMATS = [
    ("ckpt", torch.float32),
    ("ckpt", torch.float16),
    ("safetensors", torch.float32),
    ("safetensors", torch.float16),
]


def _save(sd: dict, path, fmt: str, dtype: torch.dtype, wrap: bool = True):
    sd = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    if fmt == "safetensors":
        save_file(sd, str(path))
    else:
        torch.save(_legacy_lightning_ckpt(sd) if wrap else sd, path)
    return sd


@pytest.mark.parametrize("fmt,dtype", FORMATS, ids=[f"{f}-{str(d)[6:]}" for f, d in FORMATS])
def test_tiny_roundtrip_every_format(tiny_model, tmp_path, fmt, dtype):
    path = tmp_path / f"model.{fmt}"
    saved = _save(_with_sd_extras(tiny_model), path, fmt, dtype)
    loaded = load_model_from_config(TINY_CONFIG, path)
    # Every weight arrives exactly as stored (fp16 files are widened to fp32 without further change).
    for key, value in loaded.state_dict().items():
        if key in saved and not key.startswith(("betas", "alphas", "sqrt", "log_", "posterior")):
            assert torch.equal(value, saved[key].to(value.dtype)), key
    if dtype == torch.float32:
        for ours, theirs in zip(_outputs(loaded), _outputs(tiny_model)):
            assert torch.equal(ours, theirs)
    assert loaded.alphas_cumprod.dtype == torch.float32
    assert torch.equal(loaded.alphas_cumprod, tiny_model.alphas_cumprod)  # schedule never degraded by fp16


def test_bare_state_dict_without_wrapper(tiny_model, tmp_path):
    path = tmp_path / "bare.ckpt"
    _save(dict(tiny_model.state_dict()), path, "ckpt", torch.float32, wrap=False)
    loaded = load_model_from_config(TINY_CONFIG, path)
    assert torch.equal(_outputs(loaded)[0], _outputs(tiny_model)[0])


def test_ema_weights_used_when_asked(tiny_model, tmp_path):
    path = tmp_path / "ema.safetensors"
    _save(_with_sd_extras(tiny_model), path, "safetensors", torch.float32)
    key = "model.diffusion_model.out.2.weight"
    plain = load_model_from_config(TINY_CONFIG, path)
    ema = load_model_from_config(TINY_CONFIG, path, use_ema=True)
    assert torch.equal(plain.state_dict()[key], tiny_model.state_dict()[key])
    assert torch.equal(ema.state_dict()[key], tiny_model.state_dict()[key] + 1.0)
    # Only the UNet has an EMA copy; VAE and text encoder are the file's own.
    vae_key = "first_stage_model.decoder.conv_out.weight"
    assert torch.equal(ema.state_dict()[vae_key], tiny_model.state_dict()[vae_key])


def test_use_ema_without_ema_weights_is_an_error(tiny_ckpt):
    with pytest.raises(CheckpointError, match="no model_ema"):
        load_model_from_config(TINY_CONFIG, tiny_ckpt, use_ema=True)


def test_build_for_loading_skips_random_init(tiny_config, monkeypatch):
    """A model about to receive weights is built on the meta device: no real tensor is initialised."""
    devices = []
    for name in ("kaiming_uniform_", "uniform_", "normal_", "zeros_", "ones_", "trunc_normal_"):
        original = getattr(torch.nn.init, name)

        def spy(tensor, *args, _original=original, **kwargs):
            devices.append(tensor.device.type)
            return _original(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.nn.init, name, spy)
    build_model(tiny_config.model, random_init=False)
    assert devices and set(devices) == {"meta"}
    devices.clear()
    build_model(tiny_config.model, random_init=True)
    assert "cpu" in devices  # the spy does see real initialisation when it happens


# -- bad input: one line, naming the input -------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text
    return text


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_model_from_config(TINY_CONFIG, tmp_path / "nope.ckpt")
    assert "not found" in _one_line(err.value) and "nope.ckpt" in str(err.value)


@pytest.mark.parametrize(
    "name,content",
    [("junk.ckpt", b"\x00garbage" * 100), ("junk.safetensors", b"{not json"), ("notes.ckpt", b"just some text\n")],
)
def test_file_that_is_no_checkpoint(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    assert name in _one_line(err.value)


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(CheckpointError, match="folder"):
        read_state_dict(tmp_path)


def test_missing_config(tmp_path, tiny_ckpt):
    with pytest.raises(ConfigError, match="config not found"):
        load_model_from_config(tmp_path / "none.yaml", tiny_ckpt)


def test_other_architecture_names_component_and_shapes(tiny_ckpt):
    with pytest.raises(CheckpointError) as err:
        load_model_from_config(SD_CONFIG, tiny_ckpt)
    message = _one_line(err.value)
    assert "expected [" in message and "got [" in message
    assert any(c in message for c in ("UNet (model.diffusion_model)", "VAE", "text encoder"))


def test_unexpected_and_missing_keys_are_named(tiny_model, tmp_path):
    sd = dict(tiny_model.state_dict())
    sd.pop("model.diffusion_model.out.2.bias")
    sd["model.diffusion_model.extra_layer.weight"] = torch.zeros(1)
    path = tmp_path / "odd.safetensors"
    save_file(sd, str(path))
    with pytest.raises(CheckpointError) as err:
        load_model_from_config(TINY_CONFIG, path)
    message = _one_line(err.value)
    assert "missing" in message and "out.2.bias" in message
    assert "unexpected" in message and "extra_layer.weight" in message


def test_foreign_state_dict_is_not_sd(tmp_path):
    path = tmp_path / "classifier.safetensors"
    save_file({"fc.weight": torch.zeros(3, 3)}, str(path))
    with pytest.raises(CheckpointError, match="does not look like a Stable Diffusion"):
        load_model_from_config(TINY_CONFIG, path)


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.target}",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Exploit(marker)}, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        read_state_dict(path)
    message = _one_line(err.value)
    assert "evil.ckpt" in message and "system" in message
    assert not marker.exists()


def test_plain_pickle_exploit_is_refused(tmp_path):
    marker = tmp_path / "pwned2"
    path = tmp_path / "evil2.pt"
    path.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(CheckpointError):
        read_state_dict(path)
    assert not marker.exists()


# -- full size: the real SD v1 layout survives every file format --------------------------------


@pytest.fixture(scope="module")
def full_model():
    import gc

    from sd_helpers import load_config, randomize_

    model = randomize_(build_model(load_config(SD_CONFIG).model, random_init=False), seed=2).eval()
    yield model, _outputs(model)
    del model
    gc.collect()


@pytest.mark.slow  # 1.1B parameters: ~2 minutes and ~10 GB; the tiny round trip above covers every format
@pytest.mark.parametrize("fmt,dtype", FORMATS, ids=[f"{f}-{str(d)[6:]}" for f, d in FORMATS])
def test_full_size_roundtrip(full_model, tmp_path, fmt, dtype):
    import gc

    model, reference = full_model
    path = tmp_path / f"sd-v1.{fmt}"
    sd = _with_sd_extras(model) if fmt == "ckpt" else dict(model.state_dict())
    _save(sd, path, fmt, dtype)
    del sd
    loaded = load_model_from_config(
        SD_CONFIG, path, with_embedding_manager=False
    )  # raises on any missing/unexpected/mis-shaped key
    sd_keys = [k for k in loaded.state_dict() if not k.startswith("embedding_manager.")]
    assert len(sd_keys) == len(model.state_dict()) == 1142
    for ours, theirs in zip(_outputs(loaded), reference):
        if dtype == torch.float32:
            assert torch.equal(ours, theirs)
        else:  # fp16 rounding of the weights only; seen: max relative error 1.5e-3 (UNet), 7e-4 (text, VAE)
            assert ((ours - theirs).abs().max() / theirs.abs().max()).item() < 2e-2
    del loaded
    gc.collect()


def test_safetensors_are_read_into_aligned_tensors_of_their_own(tmp_path):
    from safetensors.torch import load_file

    from ldm.safe_load import read_safetensors

    g = torch.Generator().manual_seed(0)
    sd = {
        "a": torch.randn(3, generator=g).to(torch.bfloat16),
        "b": torch.randn(5, 7, generator=g),
        "c": torch.arange(4),
        "scalar": torch.tensor(2.5, dtype=torch.float16),
        "empty": torch.zeros(0, 3),
    }
    path = tmp_path / "t.safetensors"
    save_file(sd, str(path))
    ours, theirs = read_safetensors(path), load_file(str(path))
    assert ours.keys() == theirs.keys()
    for k in sd:
        assert ours[k].dtype == theirs[k].dtype and torch.equal(ours[k], theirs[k]), k
        assert ours[k].numel() == 0 or ours[k].data_ptr() % 64 == 0, k  # not a view into a memory map
