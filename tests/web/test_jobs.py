"""The one-job runner behind Generate and Compare: one job at a time, stop, failures as one line."""

from __future__ import annotations

import threading

import pytest

from ldm.errors import ConfigError
from ldm.web.jobs import JobRunner
from ldm.web.security import WebInputError

HANG_GUARD_S = 60


def test_second_job_is_refused_while_one_runs_then_accepted():
    runner, release = JobRunner(), threading.Event()
    first = runner.start("generate", lambda job: {"waited": release.wait(HANG_GUARD_S)})
    with pytest.raises(WebInputError) as refused:
        runner.start("compare", lambda job: {})
    assert refused.value.status == 409 and f"generate job is running (job {first.id})" in str(refused.value)
    assert runner.busy_message() is not None
    release.set()
    assert runner.wait(HANG_GUARD_S)
    assert first.state == "done" and first.result == {"waited": True} and runner.busy_message() is None
    second = runner.start("compare", lambda job: {"ok": 1})
    assert runner.wait(HANG_GUARD_S) and second.state == "done" and runner.latest["compare"] is second


def test_stop_ends_the_job_at_its_next_step():
    runner, started = JobRunner(), threading.Event()

    def endless(job):
        job.progress(0, 10**9, "sampling")
        while True:
            started.set()
            job.step()

    job = runner.start("generate", endless)
    assert started.wait(HANG_GUARD_S)
    assert runner.stop()
    assert runner.wait(HANG_GUARD_S)
    assert job.state == "failed" and job.error.startswith("generate stopped after")
    assert not runner.stop()  # nothing runs any more


def test_failures_are_one_line_and_the_runner_goes_on():
    runner = JobRunner()

    def user_error(job):
        raise ConfigError("width 33 is not a multiple of 8; use 32 or 40")

    def bug(job):
        raise KeyError("oops")

    first = runner.start("generate", user_error)
    runner.wait(HANG_GUARD_S)
    assert first.as_json()["error"] == "width 33 is not a multiple of 8; use 32 or 40"
    second = runner.start("generate", bug)
    runner.wait(HANG_GUARD_S)
    assert second.state == "failed" and "KeyError" in second.error and "server log" in second.error
    assert "\n" not in second.error
