"""The retrieval split of every dataset's records (components/example_gen/sources.py):
class ranges or the dataset's protocol, the validation hold-out, and what cannot be
retrieved (single-image classes, queries without a gallery) skipped and counted."""
from __future__ import annotations

import pytest

from components.datasets import records as R
from components.datasets.records import DatasetSourceError
from components.example_gen import sources
from core.config import load_config


def rec(image_id, class_id, protocol_split=None, eval_role=""):
    return R.record(f"/x/{image_id}.jpg", image_id, class_id, f"c{class_id}",
                    protocol_split=protocol_split, eval_role=eval_role)


def rule(dataset, **data):
    return load_config(None, {"data": dict(data, dataset=dataset)}).data.split_rule()


def test_class_ranges_split_and_count_what_is_outside():
    recs = [rec(f"{c}-{i}", c) for c in range(10) for i in range(2)]  # 1-based classes 1..10
    keyed, left = sources.assign_splits(
        recs, rule("cub200", train_classes=[1, 5], eval_classes=[6, 8], validation_classes=2))
    split_of = {r[R.IMAGE_ID]: s for s, r in keyed}
    assert {split_of[f"{c}-0"] for c in range(3)} == {"train"}
    assert {split_of[f"{c}-0"] for c in (3, 4)} == {"valid"}
    assert {split_of[f"{c}-0"] for c in (5, 6, 7)} == {"eval"}
    assert left.outside_classes == 4 and "8-0" not in split_of


def test_protocol_split_holds_out_the_last_training_classes():
    recs = ([rec(f"t{c}-{i}", c, "train") for c in range(4) for i in range(2)]
            + [rec(f"e{c}-{i}", c, "eval") for c in range(4, 7) for i in range(2)])
    keyed, left = sources.assign_splits(recs, rule("sop", validation_classes=1))
    by_split = {}
    for split, r in keyed:
        by_split.setdefault(split, set()).add(r[R.CLASS_ID])
    assert by_split == {"train": {0, 1, 2}, "valid": {3}, "eval": {4, 5, 6}}
    assert left == sources.SplitCounts(0, 0, 0)


def test_holding_out_every_training_class_is_refused():
    recs = [rec(f"t{c}-{i}", c, "train") for c in range(2) for i in range(2)]
    with pytest.raises(DatasetSourceError, match="validation_classes is 2 .* only 2 training"):
        sources.assign_splits(recs, rule("folder", validation_classes=2))


def test_a_class_with_a_single_image_is_skipped_and_counted():
    recs = ([rec("a-0", 0, "train"), rec("a-1", 0, "train"), rec("b-0", 1, "train")]
            + [rec("e-0", 2, "eval"), rec("e-1", 2, "eval"), rec("f-0", 3, "eval")])
    keyed, left = sources.assign_splits(recs, rule("folder", validation_classes=0))
    assert sorted(r[R.IMAGE_ID] for _, r in keyed) == ["a-0", "a-1", "e-0", "e-1"]
    assert left.single_image_classes == 2


def test_an_inshop_query_whose_item_has_no_gallery_image_is_skipped_and_counted():
    recs = ([rec("t-0", 0, "train"), rec("t-1", 0, "train")]
            + [rec("q-0", 1, "eval", "query"), rec("g-0", 1, "eval", "gallery"),
               rec("q-1", 2, "eval", "query"), rec("g-1", 3, "eval", "gallery")])
    keyed, left = sources.assign_splits(recs, rule("inshop", validation_classes=0))
    kept = sorted(r[R.IMAGE_ID] for _, r in keyed)
    # A single gallery image is retrievable (it is not a query); q-1 has nothing to find.
    assert kept == ["g-0", "g-1", "q-0", "t-0", "t-1"]
    assert left.queries_without_gallery == 1 and left.single_image_classes == 0


def test_the_split_rule_survives_the_components_struct_round_trip():
    """The rule travels in a protobuf Struct (numbers become doubles) to the executor."""
    from google.protobuf import json_format

    from components.example_gen.component import RetrievalExampleGen
    from components.example_gen.executor import split_rule_from_exec_properties

    original = rule("folder", validation_classes=3, split_seed=7, eval_fraction=0.25)
    component = RetrievalExampleGen("/data", original)
    custom = component.exec_properties["custom_config"]
    restored = split_rule_from_exec_properties(
        {"custom_config": custom if isinstance(custom, str) else json_format.MessageToJson(custom)})
    assert restored["source_options"] == {"labels_csv": "", "eval_fraction": 0.25,
                                          "split_seed": 7}
    assert isinstance(restored["source_options"]["split_seed"], int)
    assert restored["validation_classes"] == 3 and restored["train_classes"] is None
