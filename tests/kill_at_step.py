"""Run main.py in this process and SIGKILL it right after optimizer step K (tests only).

    python tests/kill_at_step.py K <main.py arguments>

A crash at a known step between two snapshots, without racing a file watcher against the training loop:
the kill comes from inside, after step K's resumable checkpoint hook, and nothing is flushed or saved.
KILL_AT_STEP_SIGNAL=TERM sends SIGTERM instead (the UI's Stop: the run saves, then exits).
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    kill_at = int(sys.argv[1])
    signum = getattr(signal, "SIG" + os.environ.get("KILL_AT_STEP_SIGNAL", "KILL"))
    sys.path.insert(0, str(ROOT))
    from ldm.callbacks.resume_checkpoint import ResumeCheckpoint

    original = ResumeCheckpoint.on_train_batch_end

    def on_train_batch_end(self, trainer, *args) -> None:
        original(self, trainer, *args)
        if trainer.global_step == kill_at:
            os.kill(os.getpid(), signum)

    ResumeCheckpoint.on_train_batch_end = on_train_batch_end
    sys.argv = [str(ROOT / "main.py"), *sys.argv[2:]]
    runpy.run_path(str(ROOT / "main.py"), run_name="__main__")


if __name__ == "__main__":
    main()
