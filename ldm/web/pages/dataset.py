"""The Dataset page: concept folders under training_data/, photo uploads, preprocessing into a sibling
concept, the image grid with captions, one-by-one and batch tag edits, captions from a BLIP model.
Logic lives in ldm/web/datasets.py and ldm/web/dataset_captions.py."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile  # what request.form() yields (FastAPI's is a subclass)

from ldm.data.preprocess import CROPS, PreprocessOptions
from ldm.web.dataset_captions import caption_with_model, dataset_view, edit_caption, edit_tags
from ldm.web.datasets import (
    add_images,
    concept_dir,
    create_concept,
    delete_image,
    image_file,
    list_concepts,
    preprocess_concept,
)
from ldm.web.security import WebInputError
from ldm.web.state import render, web_state
from ldm.web.uploads import read_upload, reencode_image, upload_name

router = APIRouter()


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewConcept(Strict):
    name: str


class PreprocessRequest(Strict):
    size: int = Field(512, ge=8, le=4096)
    crop: Literal[CROPS] = "center"  # type: ignore[valid-type]
    flip: bool = False
    split_oversized: bool = False
    caption_from_filename: bool = False
    target: str | None = None
    replace: bool = False


class CaptionRequest(Strict):
    file: str
    caption: str


class TagRequest(Strict):
    action: Literal["remove", "replace", "add"]
    tag: str
    new: str | None = None
    where: Literal["front", "back"] = "back"
    files: list[str] | None = None  # None: every image of the concept


class FileRequest(Strict):
    file: str


class CaptionModelRequest(Strict):
    overwrite: bool = False


@router.get("/dataset")
def page(request: Request):
    settings = web_state(request).settings
    return render(
        request,
        "dataset.html",
        "dataset",
        concepts=list_concepts(settings),
        crops=CROPS,
        caption_model=settings.caption_model is not None,
        max_files=settings.max_upload_files,
    )


@router.get("/api/dataset/concepts")
def concepts(request: Request) -> dict:
    return {"concepts": list_concepts(web_state(request).settings)}


@router.post("/api/dataset/concepts")
def create(request: Request, body: NewConcept) -> dict:
    path = create_concept(web_state(request).settings, body.name)
    return {"concept": path.name}


@router.get("/api/dataset/{concept}/images")
def images(request: Request, concept: str) -> dict:
    return dataset_view(web_state(request).settings, concept)


@router.get("/api/dataset/{concept}/image/{file}")
def image(request: Request, concept: str, file: str) -> FileResponse:
    path = image_file(web_state(request).settings, concept, file)
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    return FileResponse(path, headers=headers)


@router.post("/api/dataset/{concept}/upload")
async def upload(request: Request, concept: str) -> dict:
    """Every file is read (size-capped) and re-encoded before the first is stored: one bad file stores none."""
    settings = web_state(request).settings
    concept_dir(settings, concept)
    form = await request.form(max_files=settings.max_upload_files + 1)
    files = [v for v in form.getlist("files") if isinstance(v, UploadFile) and v.filename]
    if not files:
        raise WebInputError("no photos in the upload; choose image files (PNG, JPEG, WebP) to add")
    if len(files) > settings.max_upload_files:
        raise WebInputError(f"{len(files)} files in one upload; send at most {settings.max_upload_files} at a time")
    images = []
    for f in files:
        data = await read_upload(f, settings.max_image_bytes, "photo")
        images.append((upload_name(f), reencode_image(data, upload_name(f), settings.max_image_pixels)))
    return {"added": add_images(settings, concept, images)}


@router.post("/api/dataset/{concept}/delete")
def delete(request: Request, concept: str, body: FileRequest) -> dict:
    delete_image(web_state(request).settings, concept, body.file)
    return {"deleted": body.file}


@router.post("/api/dataset/{concept}/preprocess")
def preprocess(request: Request, concept: str, body: PreprocessRequest) -> dict:
    options = PreprocessOptions(
        size=body.size,
        crop=body.crop,
        flip=body.flip,
        split_oversized=body.split_oversized,
        caption_from_filename=body.caption_from_filename,
    )
    target = (body.target or "").strip() or None
    target, count = preprocess_concept(web_state(request).settings, concept, options, target, body.replace)
    return {"concept": target, "images": count}


@router.post("/api/dataset/{concept}/caption")
def caption(request: Request, concept: str, body: CaptionRequest) -> dict:
    text = edit_caption(web_state(request).settings, concept, body.file, body.caption)
    return {"file": body.file, "caption": text}


@router.post("/api/dataset/{concept}/tags")
def tags(request: Request, concept: str, body: TagRequest) -> dict:
    changed = edit_tags(web_state(request).settings, concept, body.action, body.tag, body.new, body.where, body.files)
    return {"changed": changed}


@router.post("/api/dataset/{concept}/caption-model")
def caption_model(request: Request, concept: str, body: CaptionModelRequest) -> dict:
    return {"captioned": caption_with_model(web_state(request), concept, body.overwrite)}
