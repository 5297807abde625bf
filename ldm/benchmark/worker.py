"""One measured side of a benchmark, run in its own process so its peak memory is its own.

`python -m ldm.benchmark.worker '<json spec>'` prints one JSON line: per-step times and peak memory.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time

import torch

from ldm.benchmark.memory import PeakMemory, release_memory, rss_bytes
from ldm.training.config import network_dtype

PROMPT = "a photo of an astronaut riding a horse"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(step, n: int, device: str) -> list[float]:
    times = []
    for _ in range(n):
        _sync(device)
        t = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t)
    return times


def _train(spec: dict):
    side, dtype, res, bs, device = (
        spec["side"],
        network_dtype(spec["precision"]),
        spec["resolution"],
        spec["batch"],
        spec["device"],
    )
    g = torch.Generator().manual_seed(0)
    if side == "ours":
        from ldm.benchmark.ours import OurTrainer, load_training_model
        from ldm.benchmark.weights import FINETUNE_CONFIGS

        model = load_training_model(
            spec["ckpt"],
            spec["precision"],
            spec.get("gradient_checkpointing", False),
            spec.get("channels_last", False),
            FINETUNE_CONFIGS[spec.get("model", "sd1")],
        ).to(device)
        trainer = OurTrainer(model, res, bs)
        if spec.get("compile"):
            model.model.diffusion_model = torch.compile(model.model.diffusion_model)
        trainer.warm_cache()
        return trainer.step
    from ldm.benchmark.diffusers_side import load_components, unet_floor_step

    if side == "floor":
        unet = load_components(spec["ckpt"], dtype)["unet"].to(device).requires_grad_(False)  # as the example: frozen
        latents = torch.randn(bs, 4, res // 8, res // 8, generator=g).to(device, dtype)
        context = torch.randn(bs, 77, 768, generator=g).to(device, dtype)
        return lambda: unet_floor_step(unet, latents, context, g)
    raise ValueError(f"unknown side {side!r}")


def _sample(spec: dict):
    side, dtype, res, bs, device = (
        spec["side"],
        network_dtype(spec["precision"]),
        spec["resolution"],
        spec["batch"],
        spec["device"],
    )
    steps, cfg = spec["sample_steps"], spec["cfg_scale"]
    if side == "ours":
        from ldm.benchmark.weights import SD_CONFIG
        from ldm.generate import Generate

        gen = Generate(
            config=SD_CONFIG, weights=spec["ckpt"], device=device, precision=spec["precision"], sampler_name="ddim"
        )
        gen.load_model()
        return lambda: gen.prompt2image(
            PROMPT, steps=steps, seed=0, cfg_scale=cfg, width=res, height=res, batch_size=bs
        )
    if side == "diffusers":
        from ldm.benchmark.diffusers_side import load_components, make_pipeline

        pipe = make_pipeline(load_components(spec["ckpt"], dtype), dtype).to(device)
        return lambda: pipe(
            PROMPT,
            num_inference_steps=steps,
            guidance_scale=cfg,
            height=res,
            width=res,
            num_images_per_prompt=bs,
            generator=torch.Generator().manual_seed(0),
        )
    raise ValueError(f"unknown side {side!r} for sample")


def run(spec: dict) -> dict:
    torch.manual_seed(0)
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    with torch.no_grad() if spec["task"] == "sample" else torch.enable_grad():
        step = (_train if spec["task"] == "train" else _sample)(spec)
        _timed(step, spec["warmup"], spec["device"])
        release_memory()
        before = rss_bytes()
        with PeakMemory(spec["device"]) as peak:
            times = _timed(step, spec["steps"], spec["device"])
    per_call = statistics.median(times)
    extra = {"roofline": _roofline(step, times, spec)} if spec.get("roofline") else {}
    return {
        "side": spec["side"],
        "task": spec["task"],
        "times_s": times,
        "median_s": per_call,
        "per_sample_s": per_call / spec["batch"],
        "samples_per_s": spec["batch"] / per_call,
        "peak_bytes": peak.peak,
        "rss_before_bytes": before,
        "process_peak_bytes": _process_peak(spec["device"]),
        **extra,
    }


def _roofline(step, times: list[float], spec: dict) -> dict:
    """After the timed steps: one more step counted for FLOPs, then this process's best matmul rate."""
    from ldm.benchmark.roofline import matmul_peak, roofline, step_flops

    with torch.enable_grad():
        flops = step_flops(step)
    peak = matmul_peak(network_dtype(spec["precision"]))
    return {**roofline(times, flops["total"], peak), "gflop_by_op": {k: v / 1e9 for k, v in flops.items()}}


def _process_peak(device: str) -> int:
    """The whole process's high-water mark, loading included (what an out-of-memory kill looks at)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_reserved()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


if __name__ == "__main__":  # process entry point: stdout is the protocol with ldm.benchmark.run
    sys.stdout.write(json.dumps(run(json.loads(sys.argv[1]))) + "\n")
