"""The dataset page (placeholder until it is built)."""

from fastapi import APIRouter, Request

from ldm.web.state import render

router = APIRouter()


@router.get("/dataset")
def page(request: Request):
    return render(request, "placeholder.html", "dataset")
