"""``GET /docs/choices``: the clinical choices in force on this service, linked from every card.

A card's detail carries one line about the choices (a short detail is read; a long one is not);
this page lists them as configured, in display units, and points to the README section
"Clinical choices" where each is explained with its source. The same list stays machine-readable
in the RESULT extension ``choices``. No patient data and no authentication: it is the site's
configuration, which any clinician reading a card may see.
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from cds_hooks.advice.display import display_text
from cds_hooks.web.state import ServiceDep, SettingsDep

router = APIRouter(include_in_schema=False)


@router.get("/docs/choices")
async def choices_page(service: ServiceDep, settings: SettingsDep) -> HTMLResponse:
    choices = service.grading.config.describe()
    rows = "\n".join(f"<dt>{escape(name)}</dt><dd>{escape(display_text(text))}</dd>" for name, text in choices.items())
    zone = settings.site_timezone or "UTC (no site time zone configured)"
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>CRS grading: choices in force</title></head><body>"
        "<h1>CRS grading: choices in force</h1>"
        f"<p>Times on cards are shown in {escape(zone)}; the RESULT extension keeps UTC.</p>"
        f"<dl>\n{rows}\n</dl>"
        '<p>Each choice is explained, with its source, in the project README, section "Clinical choices". '
        "The RESULT extension <code>choices</code> of every card carries this list.</p>"
        "</body></html>"
    )
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})
