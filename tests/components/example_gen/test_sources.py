"""The retrieval split of every dataset's records (components/example_gen/sources.py):
class ranges or the dataset's protocol, the validation hold-out, and what cannot be
retrieved (single-image classes, queries without a gallery) skipped and counted."""
from __future__ import annotations

import pytest

from components.datasets import records as R
from components.datasets.records import DatasetSourceError
from components.example_gen import sources
from core.config import load_config
from tests.support.paths import REPO_ROOT


def rec(image_id, class_id, protocol_split=None, eval_role=""):
    return R.record(f"/x/{image_id}.jpg", image_id, class_id, f"c{class_id}",
                    protocol_split=protocol_split, eval_role=eval_role)


def rule(dataset, evaluator=None, **data):
    cfg = load_config(None, {"data": dict(data, dataset=dataset), "evaluator": evaluator or {}})
    return cfg.data.split_rule(cfg.evaluator)


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


# --------------------------------------------------------------------------
# A split too small to train or judge fails at ingestion, naming the keys
# --------------------------------------------------------------------------

def test_check_split_sizes_names_the_split_the_counts_and_the_keys():
    recs = ([rec(f"t{c}-{i}", c, "train") for c in range(4) for i in range(10)]
            + [rec(f"e{c}-{i}", c, "eval") for c in range(4, 6) for i in range(10)])
    keyed, _ = sources.assign_splits(recs, rule("folder", validation_classes=2))
    assert sources.split_sizes(keyed) == {"train": (20, 2, 20), "valid": (20, 2, 20),
                                          "eval": (20, 2, 20)}
    sources.check_split_sizes(keyed, rule("folder", validation_classes=2))  # just enough
    with pytest.raises(DatasetSourceError, match=r"'eval' has 20 queries with a match, fewer "
                       r"than evaluator.min_queries 21; change data.eval_fraction.*Splits: "
                       r"train=20 images of 2 classes, valid=20 images of 2 classes, eval=20"):
        sources.check_split_sizes(keyed, rule("folder", {"min_queries": 21},
                                              validation_classes=2))
    keyed, _ = sources.assign_splits(recs, rule("sop", validation_classes=3))
    with pytest.raises(DatasetSourceError, match=r"'train' has 1 class\(es\), fewer than 2 .*"
                       r"change data.validation_classes"):
        sources.check_split_sizes(keyed, rule("sop", validation_classes=3))


def test_in_shop_counts_only_queries_and_their_classes():
    recs = ([rec(f"t{c}-{i}", c, "train") for c in range(3) for i in range(2)]
            + [rec(f"q{i}", 3 + i % 2, "eval", "query") for i in range(30)]
            + [rec(f"g{c}", c, "eval", "gallery") for c in (3, 4, 5, 6)])
    keyed, _ = sources.assign_splits(recs, rule("inshop", validation_classes=0))
    # The gallery's distractor classes 5 and 6 are not judged; 30 queries of 2 classes.
    assert sources.split_sizes(keyed)["eval"] == (34, 2, 30)
    sources.check_split_sizes(keyed, rule("inshop", validation_classes=0))
    with pytest.raises(DatasetSourceError, match="'eval' has 2 class.*min_eval_classes 3"):
        sources.check_split_sizes(keyed, rule("inshop", {"min_eval_classes": 3},
                                              validation_classes=0))


def run_example_gen(cfg, tmp_path):
    """RetrievalExampleGen's executor on cfg's source, as the launcher calls it."""
    from google.protobuf import message
    from tfx.dsl.components.base import base_beam_executor
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from components.example_gen.component import RetrievalExampleGen
    from components.example_gen.executor import Executor

    component = RetrievalExampleGen(source_dir=cfg.data.source_dir,
                                    split_rule=cfg.data.split_rule(cfg.evaluator))
    properties = {k: proto_utils.proto_to_json(v) if isinstance(v, message.Message) else v
                  for k, v in component.exec_properties.items()}
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "examples")
    context = base_beam_executor.BaseBeamExecutor.Context(
        beam_pipeline_args=["--direct_num_workers=1"], tmp_dir=str(tmp_path / "tmp"),
        unique_id="gen")
    Executor(context).Do({}, {"examples": [examples]}, properties)
    return examples


def small_data_config(tmp_path, source, **data):
    from tests.conftest import small_config
    # small_config's class ranges are for its Cars196 sample; the cases below use defaults.
    return small_config(tmp_path, source, data=dict(
        {"train_classes": None, "eval_classes": None, "validation_classes": 8}, **data))


@pytest.mark.slow
def test_the_cub200_sample_with_the_standard_class_ranges_fails_at_ingestion(tmp_path):
    """`cgd sample-data --dataset cub200` writes 18 classes: classes 101-200 are empty."""
    from components.datasets.samples import make_sample_data
    make_sample_data("cub200", str(tmp_path / "cub"), 18, 10)
    cfg = small_data_config(tmp_path, tmp_path / "cub", dataset="cub200")
    with pytest.raises(DatasetSourceError) as e:
        run_example_gen(cfg, tmp_path)
    message = str(e.value)
    assert "'valid' has 0 class(es)" in message and "'eval' has 0 class(es)" in message
    assert "data.eval_classes" in message and "data.train_classes [1, 100]" in message
    assert "the source's classes are 1-18" in message
    assert "train=180 images of 18 classes, valid=0 images of 0 classes, eval=0" in message
    assert not (tmp_path / "examples").exists()  # nothing read or written


@pytest.mark.slow
def test_the_sop_sample_with_the_default_hold_out_fails_at_ingestion(tmp_path):
    """9 training products, 8 held out for validation: 1 left to train on."""
    from components.datasets.samples import make_sample_data
    make_sample_data("sop", str(tmp_path / "sop"), 18, 10)
    cfg = small_data_config(tmp_path, tmp_path / "sop", dataset="sop")
    with pytest.raises(DatasetSourceError,
                       match=r"'train' has 1 class\(es\), fewer than 2 .*change "
                             r"data.validation_classes.*train=10 images of 1 classes, "
                             r"valid=80 images of 8 classes"):
        run_example_gen(cfg, tmp_path)


def write_digits(out):
    """scikit-learn's 1,797 handwritten digits (8 x 8, 10 classes) as PNG class folders."""
    from PIL import Image
    from sklearn.datasets import load_digits
    digits = load_digits()
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        folder = out / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        image = (pixels * (255 / 16)).astype("uint8")
        Image.fromarray(image).convert("RGB").resize((32, 32)).save(folder / f"{i:04d}.png")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    write_digits(out)
    return out


def test_a_ten_class_catalogue_with_eval_fraction_0_2_fails_before_training(tmp_path, digits):
    """The issue's digits catalogue: eval_fraction 0.2 leaves 1 eval class ('7')."""
    cfg = small_data_config(tmp_path, digits, dataset="folder", eval_fraction=0.2,
                            validation_classes=2)
    with pytest.raises(DatasetSourceError,
                       match=r"'eval' has 1 class\(es\), fewer than evaluator.min_eval_classes "
                             r"2; change data.eval_fraction.*eval=179 images of 1 classes.*"
                             r"data.eval_fraction 0.2"):
        run_example_gen(cfg, tmp_path)
    assert not (tmp_path / "examples").exists()


def readme_catalogue_example() -> dict:
    """The README's "Your own catalogue needs no code" YAML block."""
    import re
    from pathlib import Path

    import yaml
    readme = (REPO_ROOT / "README.md").read_text()
    [block] = re.findall(r"```yaml\n# my_catalogue.yaml\n(.*?)```", readme, re.S)
    return yaml.safe_load(block)


def test_the_readme_catalogue_example_splits_a_ten_class_catalogue_that_can_judge(
        tmp_path, digits):
    from core.config import load_config
    example = readme_catalogue_example()
    example["data"]["source_dir"] = str(digits)
    cfg = load_config(None, example)
    rule_ = cfg.data.split_rule(cfg.evaluator)
    keyed, _ = sources.assign_splits(
        sources.iter_records("folder", str(digits), str(tmp_path), cfg.data.source_options),
        rule_)
    sources.check_split_sizes(keyed, rule_)
    classes = {split: c for split, (_, c, _) in sources.split_sizes(keyed).items()}
    assert classes == {"train": 4, "valid": 2, "eval": 4}
    assert cfg.trainer.classes_per_batch <= classes["train"]  # P x K can draw its batches
