"""The Compare page: a run's snapshots x prompt variants at one seed, each cell clickable to use that
snapshot on the Generate page. Logic lives in ldm/web/comparison.py."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from ldm.web.catalog import list_models
from ldm.web.comparison import MAX_PROMPTS, MAX_SNAPSHOTS, compare_image, parse_compare, run_compare, use_snapshot
from ldm.web.generators import generators
from ldm.web.security import WebInputError
from ldm.web.snapshots import list_runs
from ldm.web.state import render, web_state

router = APIRouter()


def _samplers() -> list[str]:
    from ldm.models.diffusion.sampling import SAMPLERS

    return list(SAMPLERS)


@router.get("/compare")
def page(request: Request):
    models = [{"id": e.id, "family": e.family, "size": e.size} for e in list_models(web_state(request).settings)]
    return render(
        request,
        "compare.html",
        "compare",
        models=models,
        samplers=_samplers(),
        max_prompts=MAX_PROMPTS,
        max_snapshots=MAX_SNAPSHOTS,
    )


@router.get("/api/compare/runs")
def runs(request: Request) -> dict:
    return {"runs": list_runs(web_state(request).settings)}


async def _json(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise WebInputError("the request body is not JSON; send the page's form") from None
    if not isinstance(body, dict):
        raise WebInputError("the request must be a JSON object")
    return body


@router.post("/api/compare/run")
async def run(request: Request) -> dict:
    state = web_state(request)
    req = parse_compare(state.settings, await _json(request))
    gens = generators(state)
    job = gens.start("compare", lambda job: run_compare(gens, state.settings, req, job))
    return {"job": job.as_json()}


@router.post("/api/compare/stop")
def stop(request: Request) -> dict:
    """Stop the running comparison at its next sampler step (no grid is written)."""
    return {"stopped": generators(web_state(request)).jobs.stop()}


@router.get("/api/compare/job")
def job(request: Request) -> dict:
    latest = generators(web_state(request)).jobs.latest.get("compare")
    return {"job": latest.as_json() if latest is not None else None}


@router.get("/api/compare/image/{grid_id}/{name}")
def image(request: Request, grid_id: str, name: str, download: bool = False) -> FileResponse:
    path = compare_image(web_state(request).settings, grid_id, name)
    filename = f"compare-{grid_id}-{name}" if download else None
    return FileResponse(path, media_type="image/png", filename=filename)


@router.post("/api/compare/use")
async def use(request: Request) -> dict:
    """Copy the clicked cell's snapshot into the embeddings folder under the chosen name."""
    body = await _json(request)
    settings = web_state(request).settings
    return use_snapshot(settings, str(body.get("run", "")), str(body.get("snapshot", "")), body.get("name"))
