"""Counting statistics of CTC enumeration: Poisson intervals and the change between two draws.

A CTC count is a Poisson count (Tibbe, Cytometry A 2007; Coumans, Transl Oncol 2012): 5 cells
in 7.5 mL are compatible with a true 1.6 to 11.7. Two questions follow, answered here with
exact methods from scipy rather than normal approximations (which fail at the small counts
that matter most, 0 to 10):

- :func:`poisson_ci`: the exact (Garwood 1936) two-sided interval of a count, from chi-square
  quantiles; :func:`per_7_5ml_ci` carries it to CTC/7.5 mL through the analysed volume.
- :func:`rate_change`: is the change between two draws more than counting noise? The exact
  conditional test of two Poisson rates: given the total ``n = k1 + k2``, the second count is
  binomial with ``p = v2 / (v1 + v2)`` when both draws share one rate (Przyborowski & Wilenski
  1940), so a two-sided binomial test on the split is exact whatever the counts.

Pure functions over numbers: no Django, so the figures, API and tests share them.
"""

from __future__ import annotations

from dataclasses import dataclass

from scipy import stats

#: CellSearch convention: counts are reported per 7.5 mL of blood.
REFERENCE_VOLUME_ML = 7.5

#: Significance level of the draw-to-draw test (stated on the pages that use it).
ALPHA = 0.05


def poisson_ci(count: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) interval of a Poisson count: 0 -> (0, 3.69), 5 -> (1.62, 11.67), 10 -> (4.80, 18.39).

    ``low = chi2(a/2; 2k) / 2`` (0 when ``k = 0``) and ``high = chi2(1 - a/2; 2k + 2) / 2``.
    """
    if count < 0:
        raise ValueError("a count cannot be negative")
    a = 1.0 - confidence
    low = 0.0 if count == 0 else float(stats.chi2.ppf(a / 2, 2 * count)) / 2
    high = float(stats.chi2.ppf(1 - a / 2, 2 * count + 2)) / 2
    return low, high


def per_7_5ml_ci(count: int, volume_ml: float, confidence: float = 0.95, digits: int = 2) -> tuple[float, float]:
    """:func:`poisson_ci` of the raw count, scaled to 7.5 mL by the analysed volume (rounded).

    The interval belongs to the count, not to the normalised value: 1 cell in 3.75 mL is
    "2 CTC/7.5 mL" but as uncertain as 1 cell, so the scaled interval is twice as wide.
    """
    if volume_ml <= 0:
        raise ValueError("volume_ml must be positive")
    low, high = poisson_ci(count, confidence)
    f = REFERENCE_VOLUME_ML / float(volume_ml)
    return round(low * f, digits), round(high * f, digits)


def count_ci(count: int, confidence: float = 0.95, digits: int = 2) -> tuple[float, float]:
    """:func:`poisson_ci` rounded for display and exports."""
    low, high = poisson_ci(count, confidence)
    return round(low, digits), round(high, digits)


def side_of_cutoff(low: float, high: float, cutoff: float) -> str:
    """Where an interval lies against the cut-off: ``"above"`` (all of it at or above),
    ``"below"`` (all of it below) or ``"straddles"``."""
    if low >= cutoff:
        return "above"
    if high < cutoff:
        return "below"
    return "straddles"


@dataclass(frozen=True)
class RateChange:
    """The change between two draws and whether it exceeds counting noise."""

    direction: str  # "rise" | "fall" | "same"
    p_value: float
    significant: bool

    @property
    def words(self) -> str:
        """``"significant (p = 0.003)"`` or ``"within counting noise (p = 0.50)"``."""
        return f"significant ({p_words(self.p_value)})" if self.significant else \
            f"within counting noise ({p_words(self.p_value)})"


def rate_change(count1: int, volume1: float, count2: int, volume2: float, alpha: float = ALPHA) -> RateChange:
    """Exact conditional test of two Poisson rates (counts with their analysed volumes).

    Under "same rate", ``count2 | n ~ Binomial(n, volume2 / (volume1 + volume2))``; the p-value
    is scipy's two-sided exact binomial test. 12 -> 1 in equal volumes: p = 0.0034; 0 -> 2: p = 0.5.
    The direction compares the rates (per mL), not the raw counts.
    """
    if min(count1, count2) < 0 or volume1 <= 0 or volume2 <= 0:
        raise ValueError("counts must be >= 0 and volumes > 0")
    rate1, rate2 = count1 / float(volume1), count2 / float(volume2)
    direction = "same" if abs(rate1 - rate2) < 1e-12 else ("rise" if rate2 > rate1 else "fall")
    n = count1 + count2
    if n == 0:
        return RateChange(direction, 1.0, False)
    p = float(stats.binomtest(count2, n, float(volume2) / (float(volume1) + float(volume2))).pvalue)
    p = min(1.0, p)
    return RateChange(direction, p, p < alpha and direction != "same")


def format_p(p: float | None) -> str:
    """p-values as clinicians read them: ``0.003``, ``0.04``, ``< 0.001``, ``0.50``."""
    if p is None:
        return "—"
    if p < 0.001:
        return "< 0.001"
    if p < 0.01:
        return f"{p:.3f}"
    return f"{p:.2f}"


def proportion_ci(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Exact (Clopper–Pearson) interval of a proportion, from scipy; None without patients.

    Conversion rates on two or three patients ("100 %, 2 of 2") need one: 2 of 2 is 16 %–100 %.
    """
    if n <= 0:
        return None
    ci = stats.binomtest(successes, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def p_words(p: float | None) -> str:
    """``"p = 0.003"``, ``"p < 0.001"`` (never "p = < 0.001")."""
    text = format_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"
