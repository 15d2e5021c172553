"""Poisson intervals and the two-rate test (patients/stats.py) against published and hand values."""

from __future__ import annotations

import pytest

from patients.stats import count_ci, format_p, per_7_5ml_ci, poisson_ci, rate_change, side_of_cutoff


@pytest.mark.parametrize(("count", "low", "high"), [
    (0, 0.0, 3.69),  # Garwood 1936; Tibbe 2007's table for CellSearch counts
    (5, 1.62, 11.67),
    (10, 4.80, 18.39),
])
def test_garwood_interval_matches_published_values(count, low, high):
    lo, hi = poisson_ci(count)
    assert lo == pytest.approx(low, abs=0.005)
    assert hi == pytest.approx(high, abs=0.005)
    assert count_ci(count) == (pytest.approx(low, abs=0.005), pytest.approx(high, abs=0.005))


def test_interval_scales_with_analysed_volume_not_the_normalised_value():
    # 5 cells in 7.5 mL and 5 cells in 3.75 mL: the second is "10 CTC/7.5 mL" but twice as wide.
    assert per_7_5ml_ci(5, 7.5) == (1.62, 11.67)
    assert per_7_5ml_ci(5, 3.75) == (3.25, 23.34)
    with pytest.raises(ValueError):
        per_7_5ml_ci(1, 0)


def test_side_of_cutoff():
    assert side_of_cutoff(*per_7_5ml_ci(20, 7.5), 5) == "above"   # 12.2-30.9
    assert side_of_cutoff(*per_7_5ml_ci(0, 7.5), 5) == "below"    # 0-3.69
    assert side_of_cutoff(*per_7_5ml_ci(5, 7.5), 5) == "straddles"
    assert side_of_cutoff(*per_7_5ml_ci(0, 3.75), 5) == "straddles"  # 0-7.38: 0 cells in half a tube


def test_two_rate_test_cases():
    # 12 -> 1 in equal volumes: P(X <= 1 | n=13, p=1/2) * 2 = 2 * 14 / 2**13.
    fall = rate_change(12, 7.5, 1, 7.5)
    assert fall.direction == "fall" and fall.significant
    assert fall.p_value == pytest.approx(2 * 14 / 2**13)
    assert fall.words == "significant (p = 0.003)"
    rise = rate_change(0, 7.5, 2, 7.5)  # 0 -> 2: within counting noise
    assert rise.direction == "rise" and not rise.significant and rise.p_value == pytest.approx(0.5)
    assert rate_change(1, 7.5, 2, 7.5).significant is False  # the 1 -> 2 "rising" arrow of old
    # 5 -> 0: from 5 CTC no drop to 0 is significant on its own (Coumans 2012): 2 * 0.5**5 = 0.0625.
    five = rate_change(5, 7.5, 0, 7.5)
    assert five.p_value == pytest.approx(0.0625) and not five.significant
    # 10 -> 0 is: 2 * 0.5**10.
    assert rate_change(10, 7.5, 0, 7.5).p_value == pytest.approx(2 / 1024)
    # Volumes count: 4 cells in 7.5 mL then 4 in 2.5 mL is a tripled rate, a rise.
    vol = rate_change(4, 7.5, 4, 2.5)
    assert vol.direction == "rise"
    assert rate_change(0, 7.5, 0, 7.0).p_value == 1.0


def test_format_p():
    assert format_p(0.0004) == "< 0.001"
    assert format_p(0.0034) == "0.003"
    assert format_p(0.5) == "0.50"


def test_p_words_never_reads_p_equals_less_than():
    from patients.stats import p_words

    assert p_words(0.0001) == "p < 0.001" and p_words(0.0034) == "p = 0.003"
    assert rate_change(30, 7.5, 0, 7.5).words == "significant (p < 0.001)"


def test_draw_status_words():
    from patients.summary import draw_status

    # 20 cells: 12.2-30.9, clear of a cut-off of 5; 0 cells: 0-3.69, clear below; 5 cells straddle.
    assert draw_status(20.0, 5, count=20, volume_ml=7.5) == ("unfavorable", "95% CI wholly at or above the cut-off")
    assert draw_status(0.0, 5, count=0, volume_ml=7.5) == ("favorable", "95% CI wholly below the cut-off")
    assert draw_status(5.0, 5, count=5, volume_ml=7.5) == ("unfavorable", "indeterminate at this volume")
    # Preliminary, 6 counted of which 4 unsure (range 2-6): indeterminate until reviewed; once final, not.
    assert draw_status(6.0, 5, preliminary=True, count=6, count_min=2, count_max=6, volume_ml=7.5)[0] == \
        "indeterminate until reviewed"
    assert draw_status(6.0, 5, preliminary=False, count=6, count_min=2, count_max=6, volume_ml=7.5)[0] == \
        "unfavorable"
    assert draw_status(9.0, 5, preliminary=True, count=9, count_min=7, count_max=9, volume_ml=7.5)[0] == \
        "unfavorable"  # the range stays on one side
