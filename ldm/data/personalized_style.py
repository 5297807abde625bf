"""The style dataset: the same sampling as the object dataset, captioned "a painting in the style of *"."""

from __future__ import annotations

from collections.abc import Sequence

from ldm.data.personalized import PersonalizedBase as _ObjectBase
from ldm.data.templates import STYLE_DUAL_TEMPLATES, STYLE_TEMPLATES


class PersonalizedStyle(_ObjectBase):
    """Style images captioned from the style templates (or `templates` / `template_file`)."""

    default_templates: Sequence[str] = STYLE_TEMPLATES
    dual_templates: Sequence[str] = STYLE_DUAL_TEMPLATES


# The paper's style config names `ldm.data.personalized_style.PersonalizedBase`.
PersonalizedBase = PersonalizedStyle
