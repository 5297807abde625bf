"""Numbers that are not numbers, sizes beyond memory and unwritable outputs at inference (issue 12).

Every float a user gives (cfg scale, strength, eta, emphasis weights) is finite and in range before it
reaches a sampler; counts and sizes are checked before the model loads. Through the real scripts: one line
on stderr naming the input, exit code 2, no traceback, nothing on disk; the invoke> session reports a bad
line and writes the next good image."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from sd_helpers import ROOT, TINY_CONFIG

from ldm.errors import ConfigError
from ldm.invoke.switches import parse_command
from ldm.prompts.parser import parse_prompt
from ldm.validate import finite_float, float_arg, int_arg, int_in_range

NOT_FINITE = ["nan", "inf", "-inf", "1e999", "NaN"]


# -- the shared checks ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [*NOT_FINITE, float("nan"), float("inf"), "x", None, -0.5, 101])
def test_finite_float_refuses_and_names_the_input(value):
    with pytest.raises(ConfigError) as err:
        finite_float("--scale", value, 0, 100)
    assert str(err.value).startswith(f"--scale {value}: ") and "from 0 to 100" in str(err.value)


def test_finite_float_and_int_accept_good_values():
    assert finite_float("lr", "1e-4", 0, lo_open=True) == 1e-4
    assert finite_float("s", 100, 0, 100) == 100.0
    with pytest.raises(ConfigError, match="above 0"):
        finite_float("lr", 0, 0, lo_open=True)
    assert int_in_range("n", "12345678901234567891", 0, None) == 12345678901234567891  # exact, not via float
    assert int_in_range("n", 2.0) == 2 and int_in_range("n", "1e3", 1, 1000) == 1000
    for bad in ("1.5", "nan", "inf", True, 0):
        with pytest.raises(ConfigError, match="^n "):
            int_in_range("n", bad, 1, 10)


def test_argparse_types_fail_while_parsing():
    p = argparse.ArgumentParser(exit_on_error=False)
    p.add_argument("--scale", type=float_arg(0, 100))
    p.add_argument("-n", type=int_arg(1, 64))
    assert p.parse_args(["--scale", "7.5", "-n", "4"]) == argparse.Namespace(scale=7.5, n=4)
    for argv, text in ((["--scale", "nan"], "nan is not a finite number"), (["-n", "0"], "0 is out of range")):
        with pytest.raises(argparse.ArgumentError, match=text):
            p.parse_args(argv)


# -- prompts and switches ------------------------------------------------------------------------------------
@pytest.mark.parametrize("weight", [*NOT_FINITE, "1" + "0" * 400, "150", "-101"])
def test_emphasis_weight_that_is_not_a_usable_number_is_refused(weight):
    with pytest.raises(ConfigError) as err:
        parse_prompt(f"a photo of (cat:{weight}) on grass")
    message = str(err.value)
    assert "emphasis" in message and "(cat:" in message and "\n" not in message


def test_emphasis_products_that_leave_the_range_are_refused():
    assert parse_prompt("(a:1e-1)")[0].weight == pytest.approx(0.1)  # exponents are weights now
    assert parse_prompt("time: 5:30")[0].text == "time: 5:30"  # a colon is still text
    for prompt in ("(" * 60 + "cat", "((cat:100))"):
        with pytest.raises(ConfigError, match="multiplies to"):
            parse_prompt(prompt)


@pytest.mark.parametrize(
    "switches, flag",
    [
        ("-C nan", "--cfg_scale"),
        ("-C 1e999", "--cfg_scale"),
        ("-f inf", "--strength"),
        ("-f 0", "--strength"),
        ("-e nan", "--ddim_eta"),
        ("-s nan", "--steps"),
        ("-n 0", "--iterations"),
        ("-S 1e99", "--seed"),
    ],
)
def test_invoke_switches_refuse_bad_numbers(switches, flag):
    with pytest.raises(ConfigError, match=flag):
        parse_command(f'"a cat" {switches}')


# -- Generate (the API) --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gen(tiny_model):
    from ldm.generate import Generate

    # prompts go through the conditioner's emphasis parser, as in invoke/txt2img
    kw = dict(config=TINY_CONFIG, model=tiny_model, device="cpu", precision="full")
    return Generate(sampler_name="k_euler", **kw)


GENERATE_BAD = [
    ({"cfg_scale": float("nan")}, "cfg_scale nan"),
    ({"cfg_scale": float("inf")}, "cfg_scale inf"),
    ({"ddim_eta": float("nan")}, "ddim_eta nan"),
    ({"ddim_eta": -1}, "ddim_eta -1"),
    ({"strength": float("nan"), "init_img": Image.new("RGB", (64, 64))}, "strength nan"),
    ({"iterations": 0}, "iterations 0"),
    ({"batch_size": 1.5}, "batch size 1.5"),
    ({"batch_size": 5000}, "batch size 5000: more than 4096 images of 64x64 px at once"),
    ({"steps": float("nan")}, "steps nan"),
    ({"width": 100000}, "width 100000: larger than 4096 px"),
    ({"seed": 2**70}, "seed"),
    ({"prompt": "a (cat:inf)"}, "emphasis '(cat:inf)'"),
    ({"negative_prompt": "(blurry:nan)"}, "emphasis '(blurry:nan)'"),
]


@pytest.mark.parametrize("kwargs, text", GENERATE_BAD, ids=[t for _, t in GENERATE_BAD])
def test_generate_refuses_before_the_sampler_runs(gen, monkeypatch, kwargs, text):
    def sampler_reached(*args, **kw):
        raise AssertionError("a bad number reached the sampler")

    monkeypatch.setattr("ldm.generate.sample_latents", sampler_reached)
    kwargs = {"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "seed": 1, **kwargs}
    with pytest.raises(ConfigError) as err:
        gen.prompt2image(**kwargs)
    assert text in str(err.value) and "\n" not in str(err.value)


# -- the scripts ---------------------------------------------------------------------------------------------
def run(script: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, f"scripts/{script}", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A NaN embedding, a good one (tiny width) and a regular file to put an output folder under."""
    from ldm.embeddings import LoadedEmbedding, write_embedding_file

    folder = tmp_path_factory.mktemp("inputs")
    nan = torch.randn(1, 32)
    nan[0, 3] = float("nan")
    torch.save({"string_to_param": {"*": nan}, "name": "nanword"}, folder / "nanword.pt")
    write_embedding_file(folder / "goodword.pt", LoadedEmbedding("goodword", torch.randn(1, 32)))
    (folder / "afile").write_text("not a folder")
    return {"nan": folder / "nanword.pt", "good": folder / "goodword.pt", "file": folder / "afile"}


# (script, flags, words the one line must contain). Every case fails before the model loads: the
# checkpoint does not exist, so a check made after loading would report the checkpoint instead.
STARTUP_BAD = {
    "txt2img --scale nan": ("txt2img.py", ["--scale", "nan"], ["--scale", "nan", "finite"]),
    "txt2img --ddim_eta inf": ("txt2img.py", ["--ddim_eta", "inf"], ["--ddim_eta", "inf"]),
    "txt2img --n_samples 0": ("txt2img.py", ["--n_samples", "0"], ["--n_samples", "0"]),
    "txt2img --n_samples 65": ("txt2img.py", ["--n_samples", "65"], ["--n_samples 65", "64 images of 512x512"]),
    "txt2img --ddim_steps nan": ("txt2img.py", ["--ddim_steps", "nan"], ["--ddim_steps", "nan"]),
    "txt2img --W 100000": ("txt2img.py", ["--W", "100000"], ["--W 100000", "4096 px", "memory"]),
    "txt2img emphasis": ("txt2img.py", ["--prompt", "a (cat:nan)"], ["(cat:nan)", "emphasis"]),
    "txt2img outdir under a file": ("txt2img.py", ["--outdir", "{file}/out"], ["--outdir", "afile"]),
    "txt2img nan embedding": ("txt2img.py", ["--embedding_path", "{nan}"], ["nanword.pt", "NaN/inf"]),
    "invoke --cfg_scale inf": ("invoke.py", ["--cfg_scale", "inf"], ["--cfg_scale", "inf"]),
    "invoke --width 100000": ("invoke.py", ["--width", "100000"], ["--width 100000", "4096 px"]),
    "invoke outdir under a file": ("invoke.py", ["--outdir", "{file}/out"], ["--outdir", "afile"]),
    "invoke nan embedding": ("invoke.py", ["--embedding_path", "{nan}"], ["nanword.pt", "NaN/inf"]),
}


@pytest.mark.parametrize("case", list(STARTUP_BAD))
def test_bad_flag_is_one_line_exit_2_before_the_model_loads(files, tmp_path, case):
    script, flags, words = STARTUP_BAD[case]
    flags = [f.format(file=files["file"], nan=files["nan"]) for f in flags]
    missing = tmp_path / "missing.ckpt"
    outdir = ["--outdir", tmp_path / "out"] if "--outdir" not in flags else []
    result = run(script, "--ckpt" if script == "txt2img.py" else "--weights", missing, *outdir, *flags, timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "missing.ckpt" not in lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no outdir, no stray files


def test_invoke_session_reports_each_bad_line_and_writes_the_next_good_image(tiny_ckpt, files, tmp_path):
    emb_dir = tmp_path / "embeddings"
    emb_dir.mkdir()
    for key in ("nan", "good"):
        (emb_dir / files[key].name).write_bytes(files[key].read_bytes())
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(init)
    bad_lines = [
        '"a cat" -C nan',
        f'"a cat" -I {init} -f inf',
        '"a photo of (cat:nan)"',
        '"a photo of cat" -n 0',
        '"a cat" -W 100000',
        f'"a cat" -o {files["file"]}/out',  # a file where the folder should be
        '"a cat" -o /proc/invoke-bad-outdir',  # the OS refuses to make a folder there
        '"a photo of nanword"',  # the folder's NaN file was skipped: plain text, still an image
    ]
    commands = []
    for seed, bad in enumerate(bad_lines, start=100):
        commands += [bad, f'"a photo of goodword" -S {seed}']
    script = tmp_path / "commands.txt"
    script.write_text("\n".join(commands) + "\nq\n", encoding="utf-8")
    out = tmp_path / "out"
    result = run(
        "invoke.py",
        *("--config", TINY_CONFIG, "--weights", tiny_ckpt, "--outdir", out, "--from_file", script),
        *("--embedding_directory", emb_dir, "--device", "cpu", "--precision", "full", "--steps", "2"),
        *("-W", "64", "-H", "64", "--history_file", tmp_path / "hist"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert "nanword.pt" in result.stderr and "NaN/inf" in result.stderr  # skipped with a warning naming it
    errors = [line for line in result.stdout.splitlines() if line.startswith("** ")]
    assert len(errors) == len(bad_lines) - 1, result.stdout  # the last bad line is a plain-text prompt
    assert "--cfg_scale: nan" in errors[0] and "--strength: inf" in errors[1] and "(cat:nan)" in errors[2]
    assert "--iterations: 0" in errors[3] and "4096 px" in errors[4]
    assert "afile" in errors[5] and "/proc/invoke-bad-outdir" in errors[6]
    for seed in range(100, 100 + len(bad_lines)):  # every good line after a bad one wrote its image
        assert len(list(out.glob(f"*.{seed}.png"))) == 1, (seed, sorted(p.name for p in out.iterdir()))
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == len(bad_lines) + 1 and not [n for n in written if n.startswith(".")]  # no temp files
    assert not Path("/proc/invoke-bad-outdir").exists() and files["file"].is_file()


def test_invoke_session_survives_a_full_disk_and_goes_on(tmp_path, monkeypatch):
    """ENOSPC while saving fails that one command with a line naming the file; the next command writes."""
    import errno

    from ldm.invoke.session import InvokeSession

    class StubGenerate:
        weights = None
        conditioner = SimpleNamespace(used_embeddings=lambda prompt: [])

        def prompt2image(self, prompt, seed=None, **kwargs):
            return [(Image.new("RGB", (8, 8), (seed, 0, 0)), seed)]

    real_save = Image.Image.save
    calls = []

    def save_once_full(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_once_full)
    lines: list[str] = []
    defaults = dict(steps=2, iterations=1, width=8, height=8, cfg_scale=7.5, sampler_name="ddim", strength=0.75)
    session = InvokeSession(StubGenerate(), tmp_path, {**defaults, "ddim_eta": 0.0, "karras": False}, lines.append)
    assert session.handle('"a cat" -S 1') and session.handle('"a cat" -S 2')
    assert lines[0].startswith(f"** {tmp_path / '000000.1.png'}: No space left on device; free some disk space")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000000.2.png"]  # no temp file from the failed write
