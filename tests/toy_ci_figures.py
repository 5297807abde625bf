"""Regenerate the figures behind test_toy_model.py's CI thresholds: the shortened main job, several seeds.

    .venv/bin/python tests/toy_ci_figures.py --steps 150 --seeds 0 1 2
    .venv/bin/python tests/toy_ci_figures.py --xl --seeds 0 1 2     # the SDXL-shaped toy's job

Prints one JSON line per seed with the embedding's, the init word's and the true words' fidelity and
editability (the same evaluation the test runs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import test_toy_model  # noqa: E402
import test_toy_xl_main_job  # noqa: E402
from train_helpers import only_run_dir, run_main, tiny_env  # noqa: E402

from ldm.evaluation.toy_metrics import Concept, SamplingSettings, evaluate_toy  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--xl", action="store_true", help="the SDXL-shaped toy (tests/test_toy_xl_main_job.py)")
    p.add_argument("--steps", type=int, default=None, help="(default: the test's CI_STEPS)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    job = test_toy_xl_main_job if args.xl else test_toy_model
    args.steps = args.steps or job.CI_STEPS
    embedding_name = getattr(job, "EMBEDDING", "embeddings.pt")
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            r = run_main(
                [
                    "--base",
                    str(job.FINETUNE),
                    "-t",
                    "--actual_resume",
                    str(job.WEIGHTS),
                    "-n",
                    "toy",
                    "--data_root",
                    str(job.CONCEPT_DATA),
                    "--init_word",
                    "shape",
                    "-l",
                    tmp,
                    "--max_steps",
                    str(args.steps),
                    "-s",
                    str(seed),
                ],
                env={**tiny_env(), "OMP_NUM_THREADS": "2"},
            )
            if r.returncode != 0:
                sys.stderr.write(r.stderr[-2000:])
                return 1
            embedding = only_run_dir(Path(tmp)) / "checkpoints" / embedding_name
            result = evaluate_toy(
                job.CONFIG,
                job.WEIGHTS,
                job.CLASSIFIER,
                Concept("star", "purple"),
                "shape",
                embedding,
                settings=SamplingSettings(samples=job.CI_SAMPLES),
            )
        rows = {row["name"]: {k: row[k] for k in ("fidelity", "editability")} for row in result["rows"]}
        print(json.dumps({"seed": seed, "steps": args.steps, "rows": rows}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
