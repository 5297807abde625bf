#!/usr/bin/env python
"""The invoke> prompt: generate images with Stable Diffusion and your learned words.

Type a prompt and switches, e.g.   "a photo of * on the beach [blurry]" -s 30 -S 42 -W 512 -H 512 -A k_euler_a
  -s steps  -S seed  -n iterations  -W/-H size  -C cfg scale  -A sampler  -I init image  -f strength
  -e ddim eta  -K karras sigmas  -g grid  -o outdir  -t show where each embedding lands
[words in brackets] form the negative prompt. Commands: !history, !fetch <png> (rerun an image's recipe),
!embeddings (list), !load <name> (an embedding from the embeddings folder), q to quit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ldm.cli import ArgumentParser, configure_logging, run_cli
from ldm.generate import MAX_CFG_SCALE, SEED_RANGE
from ldm.models.diffusion.sample import MAX_STEPS
from ldm.models.diffusion.sampling import SAMPLERS
from ldm.validate import float_arg, int_arg


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--config",
        default="configs/stable-diffusion/v1-inference.yaml",
        help="model config (SD 2.x: configs/stable-diffusion/v2-inference-v.yaml, or v2-inference.yaml for 512-base; "
        "SDXL: configs/stable-diffusion/sdxl-base-inference.yaml)",
    )
    p.add_argument(
        "--weights",
        "--ckpt",
        dest="weights",
        default="models/ldm/stable-diffusion-v1/model.ckpt",
        help="SD 1.x/2.x/SDXL .ckpt, .safetensors or diffusers folder",
    )
    p.add_argument("--embedding_path", action="append", default=[], help="an embedding file (repeatable)")
    p.add_argument(
        "--embedding_directory", default="embeddings", help="folder of embeddings, re-scanned when it changes"
    )
    p.add_argument("--sampler", default="k_lms", help=f"default sampler: {', '.join(SAMPLERS)}")
    p.add_argument("--precision", default="auto", help="auto, full/fp32, fp16 or bf16")
    p.add_argument("--device", default="auto", help="cpu, cuda, mps or auto")
    p.add_argument("--outdir", "-o", default="outputs/img-samples", help="where images go")
    p.add_argument(
        "--seed", type=int_arg(*SEED_RANGE), default=None, help="default seed (random per command when unset)"
    )
    p.add_argument("--steps", type=int_arg(1, MAX_STEPS), default=50, help="default steps")
    size = "default: the config's training size, 512 (768 for v2-inference-v.yaml, 1024 for SDXL)"
    p.add_argument("--width", "-W", type=int_arg(None), default=None, help=size)
    p.add_argument("--height", "-H", type=int_arg(None), default=None, help=size)
    p.add_argument("--cfg_scale", "-C", type=float_arg(0, MAX_CFG_SCALE), default=7.5)
    p.add_argument("--from_file", help="read commands from this file ('-' = stdin) instead of the prompt")
    p.add_argument("--history_file", default=str(Path.home() / ".invoke_history"), help="readline history")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    web = p.add_argument_group("browser UI (--web)")
    web.add_argument("--web", action="store_true", help="serve the browser UI instead of the invoke> prompt")
    web.add_argument("--host", default="127.0.0.1", help="interface to bind; anything but localhost needs --auth")
    web.add_argument("--port", type=int_arg(1, 65535), default=9090, help="port to serve on")
    web.add_argument("--auth", default=None, help="user:password for HTTP Basic auth (required off localhost)")
    web.add_argument("--caption_model", default=None, help="a BLIP image-captioning folder on disk (optional)")
    return p.parse_args(argv)


def _lines(args: argparse.Namespace):
    if args.from_file:
        from ldm.errors import LdmUserError

        stream = sys.stdin if args.from_file == "-" else open(args.from_file, encoding="utf-8")
        try:
            with stream:
                yield from stream
        except UnicodeDecodeError as exc:
            raise LdmUserError(
                f"--from_file {args.from_file} is not UTF-8 text ({exc.reason}); save it as UTF-8"
            ) from None
        return
    try:
        import readline

        try:
            readline.read_history_file(args.history_file)
        except OSError:
            pass
    except ImportError:
        readline = None
    while True:
        try:
            line = input("invoke> ")
        except EOFError:
            break
        if readline is not None:
            try:
                readline.write_history_file(args.history_file)
            except OSError:
                pass
        yield line


def _serve_web(args: argparse.Namespace) -> int:
    from ldm.web.server import parse_auth, serve
    from ldm.web.settings import WebSettings

    caption_model = Path(args.caption_model).expanduser() if args.caption_model else None
    if caption_model is not None:  # a wrong folder is an error now, not on the first click
        from ldm.data.captioning import check_folder

        check_folder(caption_model, "--caption_model")
    settings = WebSettings(host=args.host, port=args.port, auth=parse_auth(args.auth), caption_model=caption_model)
    serve(settings)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_logging(args.verbose)

    def body() -> int:
        if args.web:
            return _serve_web(args)
        from ldm.embeddings import read_embedding_file
        from ldm.errors import LdmUserError
        from ldm.fileio import check_output_dir
        from ldm.generate import Generate, check_size
        from ldm.image_size import resolve_size
        from ldm.invoke.session import InvokeSession

        if args.from_file and args.from_file != "-" and not Path(args.from_file).is_file():
            raise LdmUserError(f"--from_file {args.from_file}: no such file")
        args.width, args.height = resolve_size(args.width, args.height, args.config)
        check_size(args.width, args.height, names=("--width", "--height"))  # before minutes of loading
        check_output_dir(args.outdir, "--outdir")
        for path in args.embedding_path:
            read_embedding_file(path)  # unreadable or NaN/inf vectors: refused before the model loads
        gen = Generate(
            config=args.config,
            weights=args.weights,
            device=args.device,
            precision=args.precision,
            sampler_name=args.sampler,
            embedding_paths=args.embedding_path,
            embedding_directory=args.embedding_directory if Path(args.embedding_directory).is_dir() else None,
        )
        gen.load_model()
        _ = gen.conditioner  # load the embeddings now: a bad --embedding_path fails before the prompt
        defaults = dict(
            steps=args.steps,
            seed=args.seed,
            iterations=1,
            width=args.width,
            height=args.height,
            cfg_scale=args.cfg_scale,
            sampler_name=args.sampler,
            strength=0.75,
            ddim_eta=0.0,
            karras=False,
        )
        session = InvokeSession(gen, Path(args.outdir), defaults, emit=print)
        for line in _lines(args):
            if not session.handle(line):
                break
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
