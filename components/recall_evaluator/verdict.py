"""The blessing rule, as a pure function (no TFX imports)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Verdict:
    blessed: bool
    reason: str


def bless(candidate_r1: float, threshold: float, baseline_r1: float | None = None,
          tolerance: float = 0.0, candidate_is_baseline: bool = False) -> Verdict:
    """Bless when Recall@1 >= threshold and, with a baseline, >= baseline - tolerance.

    The first model (no blessed baseline yet) is judged on the threshold alone.
    A candidate that *is* the blessed baseline (a rerun served from the cache)
    is not blessed again: the stock Pusher would push an identical new version.
    """
    if candidate_is_baseline:
        return Verdict(False, f"ALREADY SERVING: the candidate is the blessed baseline "
                              f"(Recall@1 {candidate_r1:.4f}); not pushed again")
    if candidate_r1 < threshold:
        return Verdict(False, f"NOT BLESSED: Recall@1 {candidate_r1:.4f} is below the "
                              f"threshold {threshold:.4f}")
    if baseline_r1 is None:
        return Verdict(True, f"BLESSED: Recall@1 {candidate_r1:.4f} meets the threshold "
                             f"{threshold:.4f}; no blessed baseline yet (first model)")
    floor = baseline_r1 - tolerance
    if candidate_r1 < floor:
        return Verdict(False, f"NOT BLESSED: Recall@1 {candidate_r1:.4f} is below the blessed "
                              f"baseline's {baseline_r1:.4f} minus tolerance {tolerance:.4f}")
    return Verdict(True, f"BLESSED: Recall@1 {candidate_r1:.4f} meets the threshold "
                         f"{threshold:.4f} and the blessed baseline's {baseline_r1:.4f} minus "
                         f"tolerance {tolerance:.4f}")
