"""The index gate, as a pure function (no TFX imports), in the RecallEvaluator's style.

A push needs both: the RecallEvaluator's blessing of the model, and an index whose ANN
recall@k against exact search is at or above ``gallery_index.recall_floor``. The verdict
says which of the two refused, with the numbers.
"""

from __future__ import annotations

from typing import Optional

from components.recall_evaluator.verdict import Verdict


def bless(evaluator_blessed: bool, evaluator_reason: str, *, recall: Optional[float] = None,
          k: int = 10, floor: float = 0.95, kind: str = "", size: int = 0) -> Verdict:
    """Decide whether the candidate and its index may be pushed.

    In order:

    1. the evaluator did not bless the model: not blessed, its reason quoted (no index
       is built for a model that will not be pushed, so ``recall`` is None);
    2. ``recall`` (ANN recall@k against exact search) below ``floor``: not blessed;
    3. otherwise blessed, quoting the evaluator's reason.
    """
    if not evaluator_blessed:
        return Verdict(False, f"NOT BLESSED: the RecallEvaluator did not bless the model, "
                              f"so no index was built ({evaluator_reason or 'no reason given'})")
    if recall is None:
        raise ValueError("the index's recall is needed when the evaluator blessed the model")
    index = f"the gallery index ({kind}, {size} items) has recall@{k} {recall:.4f} against exact"
    if recall < floor:
        return Verdict(False, f"NOT BLESSED: {index} search, below gallery_index.recall_floor "
                              f"{floor:.4f}; raise gallery_index.nprobe (IVF) or ef_search "
                              f"(HNSW), or choose a more exact gallery_index.kind "
                              f"(the model itself was blessed: {evaluator_reason})")
    return Verdict(True, f"BLESSED: {index} search, at or above gallery_index.recall_floor "
                         f"{floor:.4f}; the model: {evaluator_reason}")
