"""The Train page on the toy world: the form's checks, the command line it builds, the run folder's status,
one training at a time (a second start and generation refused with 409), and a crashed run's log."""

from __future__ import annotations

import json
import time

import pytest

from ldm.web.machine import require_idle
from ldm.web.run_status import RECORD, run_status
from ldm.web.security import WebInputError
from ldm.web.train_params import main_args, parse_params

MODEL = "toy-world/toy-world.safetensors"
CONCEPT = "toy-purple-star"


def form(**changes) -> dict:
    values = {
        "model": MODEL,
        "concept": CONCEPT,
        "init_word": "shape",
        "learning_rate": "0.005",
        "scale_lr": True,
        "batch_size": 1,
        "max_steps": 6,
        "save_every": 2,
        "preview_prompt": "a photo of a * on a red background",
        "preview_negative": "blurry",
        "preview_seed": 3,
        "preview_steps": 2,
        "preview_images": 1,
    }
    values.update(changes)
    return values


@pytest.fixture(autouse=True)
def stop_training(client):
    yield
    training = client.app.state.web.services.get("training")
    if training is not None:
        training.close(grace_s=60)


def wait_for(client, run: str, done, timeout: float = 1800) -> dict:
    """Poll the run's status until done(status); the timeout is a hang guard only."""
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/api/train/runs/{run}").json()
        if done(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.3)


def test_the_page_lists_the_models_and_concepts(client):
    html = client.get("/train").text
    for needle in (MODEL, CONCEPT, 'id="train-start"', 'id="train-loss-chart"', 'id="train-previews"'):
        assert needle in html


@pytest.mark.parametrize(
    "changes, says",
    [
        ({"model": "nope.safetensors"}, "model 'nope.safetensors'"),
        ({"model": "toy-world/classifier.safetensors"}, "model 'toy-world/classifier.safetensors'"),
        ({"concept": "../toy-purple-star"}, "concept '../toy-purple-star'"),
        ({"concept": "/etc"}, "concept '/etc'"),
        ({"concept": "missing"}, "concept 'missing'"),
        ({"init_word": ""}, "init word is empty"),
        ({"learning_rate": "nan"}, "learning rate nan"),
        ({"learning_rate": "-1"}, "learning rate -1"),
        ({"learning_rate": "0.005:100, x"}, "learning rate schedule"),
        ({"batch_size": 0}, "batch size 0"),
        ({"max_steps": "12.5"}, "max steps 12.5"),
        ({"save_every": -5}, "save every -5"),
        ({"vectors": 100}, "vectors per token 100"),
        ({"template": "poem"}, "template 'poem'"),
        ({"template": "custom", "custom_templates": ""}, "custom templates are empty"),
        ({"placeholder": "two words"}, "placeholder 'two words'"),
        ({"preview_prompt": "a ${oops}"}, "preview prompt"),
        ({"name": "../up"}, "run name '../up'"),
    ],
)
def test_bad_fields_are_refused_with_one_line_naming_them(client, web_root, changes, says):
    response = client.post("/api/train/start", json=form(**changes))
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    assert says in message and "\n" not in message
    assert list((web_root / "logs").iterdir()) == []  # nothing started, no folder made


def test_the_form_becomes_main_pys_command_line(web_settings):
    params = parse_params(web_settings, form(template="filewords", learning_rate="0.005:2, 1e-3", vectors=2))
    args = main_args(web_settings, params, web_settings.logs_dir / "run1")
    text = " ".join(args)
    assert args[:2] == ["--base", "configs/toy-world/finetune.yaml"]
    assert "--actual_resume models/toy-world/toy-world.safetensors" in text
    assert "--data_root training_data/toy-purple-star --placeholder_string * --init_word shape" in text
    assert "--max_steps 6 --scale_lr true -l logs" in text
    assert 'model.params.training.lr_schedule_string="0.005:2, 1e-3"' in args
    assert "model.params.personalization_config.params.num_vectors_per_token=2" in args
    assert 'data.params.train.params.template_file="logs/run1/templates.txt"' in args
    assert "lightning.modelcheckpoint.params.every_n_train_steps=2" in args
    prompt = "lightning.callbacks.image_logger.params.log_images_kwargs.prompt="
    assert prompt + '"a photo of a * on a red background"' in args
    assert 'lightning.callbacks.image_logger.params.log_images_kwargs.negative_prompt="blurry"' in args
    # the overrides read back as the exact values (main.py's own parser)
    from ldm.training.config_files import parse_overrides

    config = parse_overrides([a for a in args if "=" in a and not a.startswith("-")])
    assert config.model.params.training.lr_schedule_string == "0.005:2, 1e-3"
    assert (
        config.lightning.callbacks.image_logger.params.log_images_kwargs.prompt == "a photo of a * on a red background"
    )


def test_a_run_folder_tells_its_state_losses_previews_and_snapshots(tmp_path):
    run = tmp_path / "logs" / "r1"
    (run / "csv").mkdir(parents=True)
    (run / "csv_parts").mkdir()
    (run / "csv_parts" / "metrics-0.csv").write_text("lr,step,train/loss\n0.1,0,0.5\n0.1,1,0.4\n0.1,2,0.9\n")
    (run / "csv" / "metrics.csv").write_text("lr,step,train/loss\n0.1,2,0.3\n0.1,3,0.2\n")  # resumed after step 2
    (run / "images" / "train").mkdir(parents=True)
    for step in (4, 2):
        (run / "images" / "train" / f"samples_scaled_gs-{step:06}_e-000000_b-000001.png").write_bytes(b"")
        (run / "checkpoints").mkdir(exist_ok=True)
        (run / "checkpoints" / f"embeddings_gs-{step}.pt").write_bytes(b"")
    (run / "checkpoints" / "embeddings_gs-10.pt").write_bytes(b"")
    (run / RECORD).write_text(json.dumps({"max_steps": 10, "stopped": False, "exit_code": 1}))
    (run / "train.log").write_text("".join(f"line {i}\n" for i in range(40)) + "error: it broke\n")

    status = run_status(run)
    assert status["losses"] == [(1, 0.5), (2, 0.4), (3, 0.3), (4, 0.2)]  # the resumed part replaced step 3
    assert status["step"] == 4 and status["max_steps"] == 10
    assert status["previews"] == [f"samples_scaled_gs-{s:06}_e-000000_b-000001.png" for s in (2, 4)]
    assert status["snapshots"] == ["embeddings_gs-2.pt", "embeddings_gs-4.pt", "embeddings_gs-10.pt"]
    assert status["state"] == "crashed" and status["log_tail"][-1] == "error: it broke"
    assert not status["resumable"]  # no last.ckpt
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert run_status(run)["resumable"]
    (run / RECORD).write_text(json.dumps({"max_steps": 10, "stopped": True, "exit_code": -15}))
    assert run_status(run)["state"] == "stopped" and run_status(run)["log_tail"] == []
    (run / RECORD).write_text(json.dumps({"max_steps": 4, "stopped": True, "exit_code": 0}))
    assert run_status(run)["state"] == "finished" and not run_status(run)["resumable"]
    assert run_status(run, alive=True)["state"] == "running"


def test_one_training_at_a_time_and_generation_waits(client):
    started = client.post("/api/train/start", json=form(max_steps=1000))
    assert started.status_code == 200, started.text
    run = started.json()["run"]
    assert started.json()["state"] == "running"
    again = client.post("/api/train/start", json=form())
    assert again.status_code == 409 and run in again.json()["error"]
    assert client.post(f"/api/train/runs/{run}/resume").status_code == 409
    with pytest.raises(WebInputError) as refused:
        require_idle(client.app.state.web)
    assert refused.value.status == 409 and "Train page" in str(refused.value)

    stopped = client.post(f"/api/train/runs/{run}/stop")
    assert stopped.status_code == 200 and stopped.json()["stopping"]
    status = wait_for(client, run, lambda s: s["state"] != "running")
    assert status["state"] == "stopped"
    require_idle(client.app.state.web)  # free again
    assert client.post(f"/api/train/runs/{run}/stop").status_code == 409  # not running any more
    runs = client.get("/api/train/runs").json()["runs"]
    assert [r["run"] for r in runs] == [run]


def test_a_crashed_run_shows_the_end_of_its_log(client, web_root):
    (web_root / "training_data" / "empty").mkdir()
    started = client.post("/api/train/start", json=form(concept="empty"))
    assert started.status_code == 200, started.text
    run = started.json()["run"]
    status = wait_for(client, run, lambda s: s["state"] != "running")
    assert status["state"] == "crashed"
    assert any(line.startswith("error:") and "empty" in line for line in status["log_tail"]), status["log_tail"]
    resume = client.post(f"/api/train/runs/{run}/resume")
    assert resume.status_code == 400 and "no resumable checkpoint" in resume.json()["error"]


@pytest.mark.parametrize(
    "url",
    [
        "/api/train/runs/..%2F..%2Fetc",
        "/api/train/runs/nope",
        "/api/train/runs/.hidden",
    ],
)
def test_runs_are_named_by_ids_inside_logs(client, url):
    response = client.get(url)
    assert response.status_code in (400, 404) and "run" in response.json()["error"]


def test_previews_and_snapshots_are_served_only_from_their_run(client, web_root):
    run = web_root / "logs" / "r1"
    (run / "configs").mkdir(parents=True)
    (run / "images" / "train").mkdir(parents=True)
    (run / "images" / "train" / "samples_scaled_gs-000002_e-0_b-1.png").write_bytes(b"\x89PNG")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "embeddings_gs-2.pt").write_bytes(b"x")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert client.get("/api/train/runs/r1/preview/samples_scaled_gs-000002_e-0_b-1.png").content == b"\x89PNG"
    assert client.get("/api/train/runs/r1/snapshot/embeddings_gs-2.pt").content == b"x"
    for url in (
        "/api/train/runs/r1/snapshot/last.ckpt",
        "/api/train/runs/r1/preview/..%2F..%2Fconfigs",
        "/api/train/runs/r1/preview/x.txt",
    ):
        response = client.get(url)
        assert response.status_code in (400, 404), url
        assert "error" in response.json()


@pytest.mark.slow  # three main.py processes on the toy world: about a minute of CPU
def test_start_watch_save_stop_resume_finish(client):
    # Long enough that Stop always lands before the end: a toy step takes milliseconds, so a run of
    # 8 steps could finish between Save now and Stop on a fast machine.
    total = 200
    started = client.post("/api/train/start", json=form(max_steps=total, save_every=25))
    assert started.status_code == 200, started.text
    run = started.json()["run"]
    status = wait_for(client, run, lambda s: s["previews"] or s["state"] != "running")
    assert status["state"] == "running" and status["losses"], status
    assert status["lrs"][0][1] == pytest.approx(0.005)  # batch 1 x 0.005, the paper's rule
    preview = client.get(f"/api/train/runs/{run}/preview/{status['previews'][0]}")
    assert preview.status_code == 200 and preview.content[:4] == b"\x89PNG"

    assert client.post(f"/api/train/runs/{run}/save").json()["save_pending"]
    status = wait_for(client, run, lambda s: not s["save_pending"] or s["state"] != "running")
    log = (client.app.state.web.settings.logs_dir / run / "train.log").read_text()
    assert "save requested (save-now.request): saving a snapshot and last.ckpt" in log
    stop = client.post(f"/api/train/runs/{run}/stop")
    assert stop.status_code == 200
    status = wait_for(client, run, lambda s: s["state"] != "running")
    assert status["state"] == "stopped" and status["resumable"], status
    assert status["step"] < total and status["latest"] == "embeddings.pt"
    assert f"embeddings_gs-{status['step']}.pt" in status["snapshots"]  # Stop saved where it stopped
    stopped_at = status["step"]
    assert [s for s, _ in status["losses"]] == list(range(1, stopped_at + 1))

    resumed = client.post(f"/api/train/runs/{run}/resume")
    assert resumed.status_code == 200 and resumed.json()["state"] == "running"
    status = wait_for(client, run, lambda s: s["state"] != "running")
    assert status["state"] == "finished" and status["step"] == total, status
    assert [s for s, _ in status["losses"]] == list(range(1, total + 1))  # the history before the stop is kept
    assert len(status["previews"]) >= 3 and f"embeddings_gs-{total}.pt" in status["snapshots"]
    record = json.loads((client.app.state.web.settings.logs_dir / run / RECORD).read_text())
    assert record["command"].startswith("python main.py --base configs/toy-world/finetune.yaml -t")
    assert record["resumes"] == [f"python main.py -r logs/{run}"]


class _Sampling:
    """A stand-in for the loaded-model cache: busy with a job, or idle and holding a model."""

    def __init__(self, busy: bool):
        self.busy, self.released = busy, False

    def busy_message(self) -> str | None:
        return "a generate job is running (job 1)" if self.busy else None

    def release(self) -> None:
        self.released = True


def test_training_waits_for_a_generation_and_frees_the_loaded_model(client, web_root):
    services = client.app.state.web.services
    services["generators"] = busy = _Sampling(busy=True)
    refused = client.post("/api/train/start", json=form())
    assert refused.status_code == 409 and "generate job is running" in refused.json()["error"]
    assert not busy.released and not any((web_root / "logs").glob("*"))  # nothing started, no run folder

    services["generators"] = idle = _Sampling(busy=False)
    started = client.post("/api/train/start", json=form(max_steps=1000))
    assert started.status_code == 200, started.text
    assert idle.released  # the model's memory is given back before the child loads its own
    client.post(f"/api/train/runs/{started.json()['run']}/stop")
