"""A draw's domain status: do the images behind its CTC count look like the validated ones?

The classifier checks every upload (``classifier.domain``; ``ImagingUpload.domain_check`` =
``{"status": "in_domain" | "shifted", "score", "reasons"}``). A count from images unlike the
validated ones may be wrong while every call looks confident, so the status travels with the
count to every place that shows or exports it: the patient list (latest count), the patient
page (table and chart), the printable summary, the cohort page's swimmer plot, the CSV exports,
the de-identified export (status only) and the FHIR Observation. The draw page keeps its
per-upload warning.

A draw's count is made of the events of its *finished* uploads (``patients.summary``), so its
status is read from those same uploads, merged like a cartridge's fields
(``patients.cartridge._merge_checks``): shifted when any of them is, the worst score, the reasons
of the shifted uploads (each once, at most :data:`MAX_REASONS`). Withdrawn and failed uploads do
not count. A draw none of whose finished uploads carries a check (analysed before the check
existed, or not analysed) has no status: pages and exports show it as before, with no flag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from patients.models import ImagingUpload, UploadStatus

IN_DOMAIN = "in_domain"
SHIFTED = "shifted"

#: the short flag beside a count (pages; dashboard/_domain_flag.html and the printable summary word it
#: the same); the reasons go to its title and to the draw page
FLAG = "images unlike the validated ones — review"
#: the same in one sentence, for exports read without the page (FHIR note, report conclusion)
SENTENCE = ("Images unlike the ones the classifier was validated on (domain check: shifted): "
            "the count may be wrong; review every call.")
#: reasons kept per draw (a cartridge already keeps at most 10 per upload)
MAX_REASONS = 10


@dataclass(frozen=True)
class DrawDomain:
    """The merged domain check of one draw's finished uploads."""

    status: str  # IN_DOMAIN | SHIFTED
    score: float | None
    reasons: tuple[str, ...] = ()

    @property
    def shifted(self) -> bool:
        return self.status == SHIFTED

    @property
    def reasons_text(self) -> str:
        """The reasons in one line ("; " between them), for a title, a hover text or a CSV cell."""
        return "; ".join(self.reasons)

    @property
    def score_text(self) -> str:
        return "" if self.score is None else f"{self.score:.2f}"


def _valid(check: object) -> dict | None:
    """A stored check the pages can trust the shape of (anything else is treated as no check)."""
    if isinstance(check, dict) and check.get("status") in (IN_DOMAIN, SHIFTED):
        return check
    return None


def _score(check: dict) -> float | None:
    try:
        return float(check["score"])
    except (KeyError, TypeError, ValueError):
        return None


def merge(checks: Iterable[object]) -> DrawDomain | None:
    """One :class:`DrawDomain` from the stored checks of a draw's finished uploads (None without any)."""
    valid = [c for c in map(_valid, checks) if c is not None]
    if not valid:
        return None
    shifted = [c for c in valid if c["status"] == SHIFTED]
    scores = [s for s in map(_score, valid) if s is not None]
    return DrawDomain(SHIFTED if shifted else IN_DOMAIN, max(scores) if scores else None,
                      tuple(merged_reasons(shifted or valid)))


#: the folder-level tail a reason gets in an upload of several images ("(10 of 10 images)", "(3 of 40
#: images; the strongest shown; µm/px 0.6-1.9, median 0.8)"): per upload, so not part of what it says
_IMAGE_COUNT_TAIL = re.compile(r" \(\d+ of \d+ images(?:;[^()]*)?\)$")


def merged_reasons(checks: Iterable[dict], limit: int = MAX_REASONS) -> list[str]:
    """The reasons of ``checks``, each once, in order, at most ``limit`` (a draw's uploads here; a
    cartridge's groups of fields in ``patients.cartridge``). A reason said by several uploads counts
    once whatever its per-upload image count; where those counts differ it reads without them and says
    how many uploads said it (one upload's "(3 of 40 images)" would understate another's "(40 of 40)")."""
    order: list[str] = []
    said: dict[str, list[str]] = {}
    for c in checks:
        for r in c.get("reasons") or []:
            if not isinstance(r, str) or not r:
                continue
            key = _IMAGE_COUNT_TAIL.sub("", r)
            if key not in said:
                order.append(key)
            said.setdefault(key, []).append(r)
    out = []
    for key in order[:limit]:
        texts = said[key]
        out.append(texts[0] if len(set(texts)) == 1 else f"{key} ({len(texts)} uploads)")
    return out


def of_uploads(uploads: Iterable[ImagingUpload]) -> DrawDomain | None:
    """The status of a draw from its uploads already loaded (a prefetch with ``status`` and ``domain_check``)."""
    return merge(u.domain_check for u in uploads if u.status == UploadStatus.DONE)


def for_draws(draw_ids: Iterable[int]) -> dict[int, DrawDomain]:
    """The status of each of these draws that has one (one query; draws without a check are absent)."""
    ids = list(draw_ids)
    if not ids:
        return {}
    checks: dict[int, list] = {}
    rows = (ImagingUpload.objects.filter(draw_id__in=ids, status=UploadStatus.DONE, domain_check__isnull=False)
            .order_by("draw_id", "created_at", "pk").values_list("draw_id", "domain_check"))
    for draw_id, check in rows:
        checks.setdefault(draw_id, []).append(check)
    merged = {draw_id: merge(cs) for draw_id, cs in checks.items()}
    return {draw_id: d for draw_id, d in merged.items() if d is not None}
