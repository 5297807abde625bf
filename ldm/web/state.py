"""What the pages share: the settings, the templates, and the long-lived services each page module adds
(the training runner, the loaded-model cache). One `WebState` per app, at `request.app.state.web`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates

from ldm.web.settings import WebSettings

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


@dataclass
class WebState:
    settings: WebSettings
    templates: Jinja2Templates = field(default_factory=lambda: Jinja2Templates(directory=str(TEMPLATES)))
    services: dict[str, Any] = field(default_factory=dict)  # name -> service, created on first use

    def service(self, name: str, factory) -> Any:
        """The app's one instance of a service (e.g. "training", "generators"), made by factory(state)."""
        if name not in self.services:
            self.services[name] = factory(self)
        return self.services[name]


def web_state(request: Request) -> WebState:
    return request.app.state.web


def render(request: Request, template: str, page: str, **context: Any):
    """A full page: base.html's navigation with `page` marked, and the page's own context."""
    from ldm.web.pages import PAGES

    state = web_state(request)
    context = {"page": page, "pages": PAGES, "settings": state.settings, **context}
    return state.templates.TemplateResponse(request, template, context)
