"""One corticosteroid regimen per patient across the CRS and ICANS cards.

The CRS card (grade 3: dexamethasone 10 mg IV q6h; grade 4: methylprednisolone 1000 mg/day) and
the ICANS card (grade 3: dexamethasone; grade 4: methylprednisolone) are built independently; for
a patient with both, offering each card's steroid would put two or three high-dose steroid orders
on the screen, each acceptable at once (issue 16 item 4). The regimen kept is the strongest one
offered (methylprednisolone over dexamethasone), on the first card that offers it (the CRS card
on a tie); every other card keeps its text but loses its steroid suggestion and says where the
regimen is [choice]. Source: ASCO 2021 (Santomasso, J Clin Oncol 2021;39:3978): high-dose
methylprednisolone for grade 4 CRS or ICANS, dexamethasone for grade 3; one steroid at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cds_hooks.cds import Card, Suggestion

STEROID_RANK: Mapping[str, int] = {"dexamethasone": 1, "methylprednisolone": 2}
"""The regimens the cards offer, weakest first."""


def steroid_in(suggestion: Suggestion) -> str | None:
    """The steroid a suggestion would order (its created MedicationRequest's text), or None."""
    for action in suggestion.actions or []:
        resource: Any = action.resource
        if isinstance(resource, dict) and resource.get("resourceType") == "MedicationRequest":
            concept = resource.get("medicationCodeableConcept")
            name = concept.get("text") if isinstance(concept, dict) else None
            if isinstance(name, str) and name in STEROID_RANK:
                return name
    return None


def one_steroid_regimen(cards: Sequence[Card]) -> list[Card]:
    """``cards`` with at most one steroid suggestion in all (see the module docstring)."""
    offers = [
        (card_index, suggestion_index, name)
        for card_index, card in enumerate(cards)
        for suggestion_index, suggestion in enumerate(card.suggestions or [])
        if (name := steroid_in(suggestion)) is not None
    ]
    if len(offers) <= 1:
        return list(cards)
    kept_card, kept_index, _ = max(offers, key=lambda o: (STEROID_RANK[o[2]], -o[0], -o[1]))
    kept = cards[kept_card]
    kept_label = (kept.suggestions or [])[kept_index].label
    where = kept.source.topic.display if kept.source.topic is not None else "other"
    out: list[Card] = []
    for card_index, card in enumerate(cards):
        suggestions = card.suggestions or []
        remaining = [
            s
            for index, s in enumerate(suggestions)
            if steroid_in(s) is None or (card_index, index) == (kept_card, kept_index)
        ]
        if len(remaining) == len(suggestions):
            out.append(card)
            continue
        here = card_index == kept_card
        note = (
            f"**Steroids:** one regimen for CRS and ICANS together: {kept_label}"
            + (" (offered here)" if here else f", offered on the {where} card")
            + "; do not add another high-dose steroid [choice]."
        )
        out.append(
            card.model_copy(
                update={
                    "suggestions": remaining or None,
                    "selectionBehavior": card.selectionBehavior if remaining else None,
                    "detail": f"{card.detail}\n\n{note}" if card.detail else note,
                }
            )
        )
    return out
