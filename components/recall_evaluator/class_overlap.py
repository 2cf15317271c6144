"""A fair comparison with production: only on eval classes neither model has seen.

The candidate never trains on eval classes (the split is class-disjoint), but the model
in production was trained on an earlier split: when the split moved (a new
``eval_fraction``, ``split_seed`` or class range, classes added to a catalogue), some of
today's eval classes may have been its training or validation classes. Retrieval of a
class a model was trained on is not retrieval of a new class, so on those classes
production has an unfair advantage, and a paired comparison over them means nothing.

The rule (``judge_fairly``), from the class names each pushed model carries in its
contract (``seen_classes``, written by the Trainer; ``production.seen_classes``):

* production's classes unknown (a model pushed before models carried them): compared on
  the whole eval split as before; the verdict says the overlap is unknown;
* no eval class seen by production: compared on the whole eval split;
* some seen: the threshold is still applied to the candidate's Recall@1 on the whole eval
  split (fair for the candidate, which has seen none of it), and the paired comparison
  runs on the images of the classes neither model has seen. Both the queries AND the
  gallery are restricted to those classes: an all-vs-all among unseen classes (In-shop:
  their queries against their gallery images), the same protocol on a smaller
  class-disjoint set. Leaving seen-class images in the gallery would keep production's
  advantage in its distractors;
* when those unseen classes are too few to judge (fewer than
  ``evaluator.min_eval_classes`` classes or ``evaluator.min_queries`` queries with a
  match), the candidate is judged on the threshold alone, and the verdict says so.

Pure: NumPy and the verdict's ``judge``; no TFX, no TensorFlow.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from components.recall_evaluator.verdict import Verdict, judge, split_size

NAMES_IN_REASON = 8
UNSEEN = "eval classes neither model has seen"


@dataclasses.dataclass(frozen=True)
class ClassOverlap:
    """Which of the eval classes the two models have seen, and what stays to compare on.

    ``unseen``: [N] bool, the eval images whose class neither model has seen;
    ``unseen_classes`` / ``unseen_queries``: their classes and the queries among them
    with a match (``verdict.split_size`` of the subset, the gate's own count).
    """
    eval_classes: tuple[str, ...]
    seen_by_production: tuple[str, ...]
    seen_by_candidate: tuple[str, ...]
    unseen: np.ndarray
    unseen_classes: int
    unseen_queries: int

    @property
    def any_seen(self) -> bool:
        return bool(self.seen_by_production or self.seen_by_candidate)

    def judgeable(self, classes_needed: int, queries_needed: int) -> bool:
        return self.unseen_classes >= classes_needed and self.unseen_queries >= queries_needed

    def fields(self, comparison: str) -> dict:
        """The metrics.json ``class_overlap`` record."""
        return {"production_classes": "known", "comparison": comparison,
                "num_eval_classes": len(self.eval_classes),
                "num_baseline_seen_eval_classes": len(self.seen_by_production),
                "candidate_seen_eval_classes": list(self.seen_by_candidate),
                "num_unseen_eval_classes": self.unseen_classes,
                "unseen_images": int(self.unseen.sum()),
                "unseen_queries": self.unseen_queries,
                "gallery": "restricted to the unseen classes (all-vs-all among them)"}


def find_overlap(class_names: Sequence[str], production_seen, candidate_seen=None,
                 roles=None) -> ClassOverlap:
    """The overlap of the eval images' classes (``class_names``, one per image) with the
    classes production (and the candidate, if known) were trained and validated on."""
    names = np.asarray(list(class_names), dtype=object)
    eval_classes = tuple(sorted(set(names.tolist())))
    production_seen = frozenset(production_seen)
    candidate_seen = frozenset(candidate_seen or ())
    by_production = tuple(c for c in eval_classes if c in production_seen)
    by_candidate = tuple(c for c in eval_classes if c in candidate_seen)
    excluded = set(by_production) | set(by_candidate)
    unseen = np.array([name not in excluded for name in names.tolist()], dtype=bool)
    subset_roles = None if roles is None else np.asarray(roles)[unseen]
    return ClassOverlap(eval_classes, by_production, by_candidate, unseen,
                        *split_size(names[unseen].astype(str), subset_roles))


def _named(names: Sequence[str]) -> str:
    shown = ", ".join(names[:NAMES_IN_REASON])
    return shown + (f", ... ({len(names) - NAMES_IN_REASON} more)"
                    if len(names) > NAMES_IN_REASON else "")


def _seen_sentence(overlap: ClassOverlap) -> str:
    return (f"production has seen {len(overlap.seen_by_production)} of the "
            f"{len(overlap.eval_classes)} eval classes in training or validation "
            f"({_named(overlap.seen_by_production)})")


def judge_fairly(ev, labels, class_names: Optional[Sequence[str]], candidate_embeddings,
                 production_embeddings=None, *, production_seen=None, candidate_seen=None,
                 candidate_is_baseline: bool = False, roles=None) -> tuple[dict, Verdict]:
    """``verdict.judge`` with the comparison restricted to classes neither model has seen.

    Args:
      ev: the evaluator config (``min_eval_classes`` and ``min_queries``: too few to judge).
      labels, candidate_embeddings, production_embeddings, candidate_is_baseline, roles:
        as for ``verdict.judge``.
      class_names: [N] the class name of every eval image, or None (examples without
        names: the overlap is unknown).
      production_seen: the class names production was trained and validated on
        (``production.seen_classes``), or None: unknown.
      candidate_seen: the candidate's, or None (it has seen no eval class by construction).

    Returns (metrics.json fields, Verdict): ``judge``'s fields, plus with a production
    model ``baseline_seen_eval_classes`` (None when unknown) and ``class_overlap``; when the
    comparison ran on the unseen classes, ``baseline`` and ``difference`` are that
    comparison's and ``comparison`` holds all of it (the candidate's metrics on the subset
    included), while ``candidate`` stays the whole eval split's.
    """
    if production_embeddings is None:  # no production model, or the candidate is it
        return judge(ev, labels, candidate_embeddings, None,
                     candidate_is_baseline=candidate_is_baseline, roles=roles)
    if production_seen is None or class_names is None:
        result, verdict = judge(ev, labels, candidate_embeddings, production_embeddings,
                                candidate_is_baseline=candidate_is_baseline, roles=roles)
        why = ("its contract does not name the classes it was trained on (pushed before "
               "models carried them)" if production_seen is None else
               "the eval examples carry no class names")
        result.update(baseline_seen_eval_classes=None, class_overlap={
            "production_classes": "unknown", "comparison": "the whole eval split",
            "why": why})
        return result, Verdict(verdict.blessed, f"{verdict.reason}; whether production has "
                                                f"seen any eval class is unknown: {why}")
    overlap = find_overlap(class_names, production_seen, candidate_seen, roles)
    if not overlap.any_seen:
        result, verdict = judge(ev, labels, candidate_embeddings, production_embeddings,
                                candidate_is_baseline=candidate_is_baseline, roles=roles)
        result.update(baseline_seen_eval_classes=[],
                      class_overlap=overlap.fields("the whole eval split"))
        return result, verdict

    # The threshold on the whole eval split: the candidate has seen none of it.
    result, alone = judge(ev, labels, candidate_embeddings, None,
                          candidate_is_baseline=candidate_is_baseline, roles=roles)
    result["baseline_seen_eval_classes"] = list(overlap.seen_by_production)
    seen = _seen_sentence(overlap)
    needed = (ev.min_eval_classes, ev.min_queries)
    if not alone.blessed:
        result["class_overlap"] = overlap.fields("none: refused before the comparison")
        return result, Verdict(False, f"{alone.reason}; {seen}")
    if not overlap.judgeable(*needed):
        result["class_overlap"] = overlap.fields("none: judged on the threshold alone")
        r1 = result["candidate"]["recall@1"]
        return result, Verdict(True, (
            f"BLESSED on the threshold alone: Recall@1 {r1:.4f} meets the threshold "
            f"{ev.recall_threshold:.4f}; not compared with production: {seen}, and the "
            f"{overlap.unseen_classes} {UNSEEN} ({overlap.unseen_queries} queries with a match) "
            f"are too few to judge (evaluator.min_eval_classes {needed[0]}, "
            f"evaluator.min_queries {needed[1]})"))

    # The paired comparison among the unseen classes only; the threshold was applied above.
    keep = overlap.unseen
    subset, compared = judge(
        dataclasses.replace(ev, recall_threshold=0.0), np.asarray(labels)[keep],
        np.asarray(candidate_embeddings)[keep], np.asarray(production_embeddings)[keep],
        roles=None if roles is None else np.asarray(roles)[keep])
    result["class_overlap"] = overlap.fields(UNSEEN)
    result["comparison"] = dict(subset, on=UNSEEN, classes=[
        c for c in overlap.eval_classes if c not in set(overlap.seen_by_production)
        | set(overlap.seen_by_candidate)])
    for key in ("baseline", "difference"):
        if key in subset:
            result[key] = subset[key]
    return result, Verdict(compared.blessed, (
        f"{compared.reason}; compared on the {overlap.unseen_classes} {UNSEEN} "
        f"({overlap.unseen_queries} queries, gallery restricted to them) because {seen}; "
        f"Recall@1 on the whole eval split {result['candidate']['recall@1']:.4f} "
        f"(threshold {ev.recall_threshold:.4f})"))
