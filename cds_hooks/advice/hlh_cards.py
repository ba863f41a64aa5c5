"""The "consider an HLH-like syndrome" card: carHLH met, an HScore proven at or above 169, or a
possible IEC-HS flag. Never a diagnosis: the card says "consider" and names the findings, with
every score's FHIR references in its RESULT objects.
"""

from __future__ import annotations

import uuid

from cds_hooks.advice.cards import ASCO_URL, EXTENSION_KEY, CardOptions, score_lines
from cds_hooks.advice.display import display_text, site_zone
from cds_hooks.cds import Card, Link, Source
from cds_hooks.grading.hlh import CARHLH, HSCORE, HSCORE_CUTOFF, IEC_HS
from cds_hooks.grading.result import ScoreResult
from cds_hooks.pipeline.evaluate import Evaluation


def _triggers(scores: tuple[ScoreResult, ...]) -> list[str]:
    """Why the card is shown, one phrase per score that calls for it."""
    out: list[str] = []
    for score in scores:
        if score.system == CARHLH and score.interpretation == "met":
            out.append("carHLH criteria met")
        elif score.system == HSCORE and (score.score_at_least or 0) >= HSCORE_CUTOFF:
            out.append(f"HScore at least {score.score_at_least:g} (cut-off {HSCORE_CUTOFF})")
        elif score.system == IEC_HS:
            out.append("possible IEC-HS")
    return out


def build_hlh_cards(evaluation: Evaluation, options: CardOptions | None = None) -> list[Card]:
    """One warning card when an HLH-like syndrome should be considered, else none."""
    opts = options or CardOptions()
    hlh = tuple(s for s in evaluation.scores if s.system in {CARHLH, HSCORE, IEC_HS})
    triggers = _triggers(hlh)
    if not triggers:
        return []
    lines = [
        "**Consider an HLH-like syndrome** (carHLH, HLH/MAS, IEC-HS): "
        + "; ".join(triggers)
        + ". Not a diagnosis: a prompt to review with haematology.",
    ]
    zone = site_zone(opts.site_timezone)
    for score in hlh:
        lines += [display_text(line, zone) for line in score_lines(score)]
    summary = f"Consider an HLH-like syndrome: {'; '.join(triggers)}"
    return [
        Card(
            uuid=str(uuid.uuid4()),
            summary=summary if len(summary) <= 139 else summary[:138] + "…",
            detail="\n".join(lines),
            indicator="warning",
            source=Source(label=opts.source_label, url=ASCO_URL),
            links=[Link(label="ASCO guideline: CAR-T toxicity management (2021)", url=ASCO_URL, type="absolute")],
            extension={EXTENSION_KEY: [s.to_json() for s in hlh]},
        )
    ]
