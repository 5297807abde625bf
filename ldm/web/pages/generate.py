"""The Generate page: prompt, sampler, size, img2img, an embedding picker; a gallery with each image's
recipe, "reuse this recipe" and download. Logic lives in ldm/web/generation.py and gallery.py."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from starlette.datastructures import UploadFile  # what request.form() holds (FastAPI's is a subclass)

from ldm.web.catalog import list_models
from ldm.web.embedding_words import folder_embeddings
from ldm.web.gallery import image_path, init_path, list_gallery, read_recipe, store_init_image
from ldm.web.generation import MAX_IMAGES, parse_request, run_generation
from ldm.web.generators import generators
from ldm.web.snapshots import list_runs
from ldm.web.state import render, web_state
from ldm.web.uploads import read_upload, reencode_image, upload_name

router = APIRouter()


def _samplers() -> list[dict]:
    from ldm.models.diffusion.sampling import SAMPLERS

    return [{"name": name, "description": spec.description} for name, spec in SAMPLERS.items()]


def _models(request: Request) -> list[dict]:
    entries = list_models(web_state(request).settings)
    return [{"id": e.id, "family": e.family, "size": e.size} for e in entries]


@router.get("/generate")
def page(request: Request):
    return render(
        request, "generate.html", "generate", models=_models(request), samplers=_samplers(), max_images=MAX_IMAGES
    )


@router.get("/api/generate/options")
def options(request: Request) -> dict:
    settings = web_state(request).settings
    return {
        "models": _models(request),
        "samplers": _samplers(),
        "embeddings": [e.as_json() for e in folder_embeddings(settings.embeddings_dir)],
        "runs": list_runs(settings),
        "loaded": generators(web_state(request)).loaded,
    }


@router.post("/api/generate/run")
async def run(request: Request) -> dict:
    """Check the form, store the init image (uploaded, or an earlier one by id), start the job."""
    state = web_state(request)
    settings = state.settings
    form = await request.form()
    upload = form.get("init")
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    init_id = fields.get("init_id", "").strip() or None
    if init_id is not None:
        init_path(settings, init_id)
    has_upload = isinstance(upload, UploadFile) and bool(upload.filename)
    req = parse_request(settings, fields, init_id or ("pending" if has_upload else None))
    if has_upload:  # every other field is checked first, so a refused request stores nothing
        data = await read_upload(upload, settings.max_image_bytes, "init image")
        init_id = store_init_image(settings, reencode_image(data, upload_name(upload)))
        req = dataclasses.replace(req, init_id=init_id)
    gens = generators(state)
    job = gens.start("generate", lambda job: run_generation(gens, settings, req, job))
    return {"job": job.as_json()}


@router.post("/api/generate/stop")
def stop(request: Request) -> dict:
    """Stop the running generation at its next sampler step (nothing is saved)."""
    return {"stopped": generators(web_state(request)).jobs.stop()}


@router.get("/api/generate/job")
def job(request: Request) -> dict:
    """The latest generation job (None before the first)."""
    latest = generators(web_state(request)).jobs.latest.get("generate")
    return {"job": latest.as_json() if latest is not None else None}


@router.get("/api/generate/gallery")
def gallery(request: Request) -> dict:
    return {"images": list_gallery(web_state(request).settings)}


@router.get("/api/generate/image/{image_id}")
def image(request: Request, image_id: str, download: bool = False) -> FileResponse:
    path = image_path(web_state(request).settings, image_id)
    return FileResponse(
        path, media_type="image/png", filename=path.name if download else None, content_disposition_type="attachment"
    )


@router.get("/api/generate/recipe/{image_id}")
def recipe(request: Request, image_id: str) -> dict:
    settings = web_state(request).settings
    return read_recipe(settings, image_path(settings, image_id))


@router.get("/api/generate/init/{init_id}")
def init_image(request: Request, init_id: str) -> FileResponse:
    return FileResponse(init_path(web_state(request).settings, init_id), media_type="image/png")
