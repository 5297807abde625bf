"""The generate page (placeholder until it is built)."""

from fastapi import APIRouter, Request

from ldm.web.state import render

router = APIRouter()


@router.get("/generate")
def page(request: Request):
    return render(request, "placeholder.html", "generate")
