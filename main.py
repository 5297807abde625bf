#!/usr/bin/env python
"""Textual inversion training, with the paper repo's command line:

  python main.py --base configs/stable-diffusion/v1-finetune.yaml -t --actual_resume sd-v1-4.ckpt \\
      -n mycat --gpus 0, --data_root training_data/mycat --init_word cat

SDXL: --base configs/stable-diffusion/sdxl-finetune.yaml --actual_resume sd_xl_base_1.0.safetensors (1024 px,
aspect-ratio buckets). Extra `key=value` arguments override the merged config (e.g. data.params.batch_size=4).
"""

from __future__ import annotations

import argparse
import logging
import sys

from ldm.cli import ArgumentParser, run_cli
from ldm.errors import LdmUserError
from ldm.validate import int_arg

# Old configs name these as main.DataModuleFromConfig / main.ImageLogger; imported on use, so a refused
# run never waits for Lightning to import.
_REEXPORTS = {"ImageLogger": "ldm.callbacks", "DataModuleFromConfig": "ldm.data.datamodule"}


def __getattr__(name: str):
    if name in _REEXPORTS:
        import importlib

        return getattr(importlib.import_module(_REEXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def str2bool(value: str) -> bool:
    if isinstance(value, bool):
        return value
    if value.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if value.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # errors: one line
    p.add_argument(
        "-b",
        "--base",
        nargs="*",
        default=[],
        metavar="config.yaml",
        help="configs merged left to right (later ones win)",
    )
    p.add_argument("-t", "--train", type=str2bool, nargs="?", const=True, default=False, help="train")
    p.add_argument("-n", "--name", default="", help="run name, the suffix of the log directory")
    p.add_argument("-p", "--postfix", default="", help="extra suffix of the log directory")
    p.add_argument("-r", "--resume", default="", help="resume from a log directory or a checkpoint in it")
    p.add_argument(
        "--actual_resume", default="", help="the Stable Diffusion (1.x, 2.x or SDXL) .ckpt/.safetensors to invert into"
    )
    p.add_argument("--data_root", action="append", help="folder of training images (repeat for several concepts)")
    p.add_argument("--init_word", action="append", help="word(s) the embedding starts from (one per placeholder)")
    p.add_argument(
        "--placeholder_string", action="append", help="the learned word, e.g. '*' or '<my-cat>' (one per data folder)"
    )
    p.add_argument("--embedding_manager_ckpt", default="", help="start from an existing embedding file (any format)")
    p.add_argument("--gpus", default=None, help="GPU indices, e.g. '0,' or '0,1'; omit for CPU")
    p.add_argument("--num_nodes", type=int_arg(1), default=1, help="machines for DDP (with torchrun/SLURM)")
    p.add_argument(
        "--no-test",
        dest="no_test",
        type=str2bool,
        nargs="?",
        const=True,
        default=True,
        help="skip testing after training (there is no test stage; accepted for compatibility)",
    )
    p.add_argument(
        "-s",
        "--seed",
        type=int,
        default=None,
        help="seed of the data order, noise and timesteps (default 23; -r keeps the run's own)",
    )
    p.add_argument("-l", "--logdir", default="logs", help="parent folder of run directories")
    p.add_argument(
        "--scale_lr",
        type=str2bool,
        nargs="?",
        const=True,
        default=None,
        help="lr = accumulate x devices x batch x base_lr (as the paper, the default; --scale_lr false to "
        "disable; -r keeps the run's own)",
    )
    p.add_argument(
        "--max_steps", type=int_arg(1), default=None, help="optimizer steps (overrides lightning.trainer.max_steps)"
    )
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        default=None,
        help="dtype of the frozen networks; the learned vectors stay fp32",
    )
    p.add_argument("--debug_dataset", action="store_true", help="print the captions and token ids, then exit")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv=None) -> int:
    args, overrides = build_parser().parse_known_args(argv)
    # Progress and info go to stdout so stderr carries only problems (a bad input is one line there).
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from ldm.training.launch import check_inputs
    from ldm.training.resume_policy import RunFinished

    def body() -> int:
        if not args.debug_dataset and not args.train and not args.resume:
            raise LdmUserError("nothing to do; pass -t to train (or -r <logdir> to resume)")
        try:
            # Every input checked before Lightning and the model are even imported: a refused run is quick.
            check_inputs(args, overrides, training=not args.debug_dataset)
            from ldm.training.lightning_logs import route_lightning_logs
            from ldm.training.run import debug_dataset, train

            route_lightning_logs()  # after Lightning's import, which adds its own stderr handler

            if args.debug_dataset:
                print("\n".join(debug_dataset(args, overrides)))
            else:
                print(f"run directory: {train(args, overrides)}")
        except RunFinished as done:  # -r of a finished run: nothing to train is not an error
            print(done)
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
