"""The blessing rule: threshold, baseline, tolerance, first model, cached rerun."""
import pytest

from components.recall_evaluator.verdict import bless


@pytest.mark.parametrize("r1, threshold, baseline, tol, blessed, words", [
    (0.50, 0.40, None, 0.0, True, "first model"),
    (0.30, 0.40, None, 0.0, False, "below the threshold"),
    (0.50, 0.40, 0.49, 0.0, True, "baseline"),
    (0.50, 0.40, 0.50, 0.0, True, "baseline"),          # equal is enough
    (0.48, 0.40, 0.50, 0.0, False, "below the blessed baseline"),
    (0.48, 0.40, 0.50, 0.03, True, "tolerance"),         # within tolerance
    (0.46, 0.40, 0.50, 0.03, False, "minus tolerance"),
    (0.35, 0.40, 0.10, 0.0, False, "below the threshold"),  # threshold first
])
def test_bless(r1, threshold, baseline, tol, blessed, words):
    verdict = bless(r1, threshold, baseline, tol)
    assert verdict.blessed is blessed
    assert words in verdict.reason
    assert ("NOT BLESSED" in verdict.reason) is (not blessed)


def test_candidate_that_is_the_baseline_is_not_pushed_again():
    verdict = bless(0.9, 0.0, None, 0.0, candidate_is_baseline=True)
    assert not verdict.blessed and "ALREADY SERVING" in verdict.reason
