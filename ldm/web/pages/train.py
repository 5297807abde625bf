"""The Train page: the form that starts main.py, the live progress of a run (loss and lr curves, preview
grids, snapshots), Stop / Save now / Resume, and the past runs. Logic lives in ldm/web/training_runner.py,
ldm/web/train_params.py and ldm/web/run_status.py."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from ldm.web.catalog import list_models
from ldm.web.run_status import SNAPSHOT
from ldm.web.security import WebInputError, child
from ldm.web.state import WebState, render, web_state
from ldm.web.train_params import TEMPLATES, parse_params
from ldm.web.training_runner import TrainingRunner

router = APIRouter()


def runner(state: WebState) -> TrainingRunner:
    return state.service("training", TrainingRunner)


def _concepts(state: WebState) -> list[str]:
    root = state.settings.data_root
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


@router.get("/train")
def page(request: Request):
    state = web_state(request)
    models = [{"id": m.id, "family": m.family, "size": m.size} for m in list_models(state.settings)]
    return render(request, "train.html", "train", models=models, concepts=_concepts(state), templates_choices=TEMPLATES)


async def _body(request: Request) -> dict[str, Any]:
    """The form as a JSON object or a posted form; anything else is refused with one line."""
    if "application/json" in request.headers.get("content-type", ""):
        try:
            body = await request.json()
        except ValueError:
            raise WebInputError("the request body is not JSON; send the form as a JSON object") from None
    else:
        body = dict(await request.form())
    if not isinstance(body, dict):
        raise WebInputError("the request body is not a JSON object of the form's fields")
    return body


@router.post("/api/train/start")
async def start(request: Request) -> dict[str, Any]:
    state = web_state(request)
    params = parse_params(state.settings, await _body(request))
    return runner(state).start(params)


@router.get("/api/train/runs")
def runs(request: Request) -> dict[str, Any]:
    return {"runs": runner(web_state(request)).runs()}


@router.get("/api/train/runs/{run}")
def status(request: Request, run: str) -> dict[str, Any]:
    return runner(web_state(request)).status(run)


@router.post("/api/train/runs/{run}/stop")
def stop(request: Request, run: str) -> dict[str, Any]:
    return runner(web_state(request)).stop(run)


@router.post("/api/train/runs/{run}/save")
def save_now(request: Request, run: str) -> dict[str, Any]:
    return runner(web_state(request)).save_now(run)


@router.post("/api/train/runs/{run}/resume")
def resume(request: Request, run: str) -> dict[str, Any]:
    return runner(web_state(request)).resume(run)


@router.get("/api/train/runs/{run}/preview/{name}")
def preview(request: Request, run: str, name: str) -> FileResponse:
    """A grid from the run's images/train/ (PNG files only)."""
    state = web_state(request)
    runner(state).run_dir(run)
    if not name.endswith(".png"):
        raise WebInputError(f"preview {name!r} is not a PNG grid of the run; pick one from the list")
    path = child(state.settings.logs_dir, run, "images", "train", name, what="preview")
    if not path.is_file():
        raise WebInputError(f"preview {name!r} is not in run {run!r}; pick one from the list", status=404)
    return FileResponse(path, media_type="image/png")


@router.get("/api/train/runs/{run}/snapshot/{name}")
def snapshot(request: Request, run: str, name: str) -> FileResponse:
    """Download one of the run's embedding files (a step snapshot or the latest)."""
    state = web_state(request)
    runner(state).run_dir(run)
    if not (SNAPSHOT.fullmatch(name) or name in ("embeddings.pt", "embeddings.safetensors")):
        raise WebInputError(f"snapshot {name!r} is not an embedding file of the run; pick one from the list")
    path = child(state.settings.logs_dir, run, "checkpoints", name, what="snapshot")
    if not path.is_file():
        raise WebInputError(f"snapshot {name!r} is not in run {run!r}; pick one from the list", status=404)
    return FileResponse(path, media_type="application/octet-stream", filename=f"{run}-{name}")
