"""The Embeddings page: the library (embeddings/) and each run's latest embedding, with upload, download,
convert, merge, add-a-run and delete. Requests carry file and run ids, never paths (ldm/web/security.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel

from ldm.embeddings.diffusers_pair import complete_pair
from ldm.web import embedding_actions as actions
from ldm.web.embedding_files import library_files, library_path, run_embedding, run_files
from ldm.web.state import render, web_state

router = APIRouter()


class ConvertRequest(BaseModel):
    file: str
    format: str
    out: str | None = None  # the new file's name (default: <stem>-<format>)
    name: str | None = None  # rename the term (one-term files)


class MergeRequest(BaseModel):
    files: list[str]
    out: str
    rename: bool = False


class FileRequest(BaseModel):
    file: str


class AddRunRequest(BaseModel):
    run: str
    out: str | None = None


def _listing(request: Request) -> dict:
    settings = web_state(request).settings
    return {
        "library": [f.as_json() for f in library_files(settings)],
        "runs": [f.as_json() for f in run_files(settings)],
    }


@router.get("/embeddings")
def page(request: Request):
    listing = _listing(request)
    formats = list(actions.FORMAT_SUFFIX)
    return render(request, "embeddings.html", "embeddings", formats=formats, **listing)


@router.get("/api/embeddings/list")
def list_all(request: Request) -> dict:
    return _listing(request)


@router.get("/api/embeddings/file/{file}")
def download(request: Request, file: str) -> Response:
    settings = web_state(request).settings
    path = library_path(settings, file)
    if complete_pair(path) is not None:  # half of diffusers' pair is no use alone: both files, zipped
        return download_pair(request, file)
    return FileResponse(path, filename=path.name, media_type="application/octet-stream")


@router.get("/api/embeddings/pair/{file}")
def download_pair(request: Request, file: str) -> Response:
    """diffusers' SDXL pair of a library file, as a zip of its two files."""
    data, name = actions.diffusers_pair_zip(web_state(request).settings, file)
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return Response(data, media_type="application/zip", headers=headers)


@router.get("/api/embeddings/run/{run}")
def download_run(request: Request, run: str) -> FileResponse:
    path = run_embedding(web_state(request).settings, run)
    return FileResponse(path, filename=f"{run}{path.suffix}", media_type="application/octet-stream")


@router.post("/api/embeddings/upload")
async def upload(request: Request, files: Annotated[list[UploadFile], File()]) -> dict:
    added = await actions.save_uploads(web_state(request).settings, files)
    return {"added": [f.as_json() for f in added]}


@router.post("/api/embeddings/convert")
def convert(request: Request, body: ConvertRequest) -> dict:
    info = actions.convert(web_state(request).settings, body.file, body.format, body.out, body.name)
    return {"added": [info.as_json()]}


@router.post("/api/embeddings/merge")
def merge(request: Request, body: MergeRequest) -> dict:
    info = actions.merge(web_state(request).settings, body.files, body.out, body.rename)
    return {"added": [info.as_json()]}


@router.post("/api/embeddings/delete")
def delete(request: Request, body: FileRequest) -> dict:
    return {"deleted": actions.delete(web_state(request).settings, body.file)}


@router.post("/api/embeddings/add-run")
def add_run(request: Request, body: AddRunRequest) -> dict:
    info = actions.add_run(web_state(request).settings, body.run, body.out)
    return {"added": [info.as_json()]}
