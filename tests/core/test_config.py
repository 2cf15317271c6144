"""One typed config: defaults, overlays, and errors that name the key."""
import re
from pathlib import Path

import pytest

from core.config import DEMO_FILE, ConfigError, load_config


def test_defaults_are_the_cgd_recipe():
    """leftthomas/CGD's recipe (see the README's recipe table)."""
    cfg = load_config()
    t = cfg.trainer
    assert (t.backbone, t.backbone_weights, t.offline) == ("resnet50", "imagenet", False)
    assert t.freeze_batchnorm and not t.freeze_batchnorm_affine  # statistics only
    assert (t.classes_per_batch, t.images_per_class) == (32, 4)
    assert t.learning_rate == pytest.approx(1e-4) and t.lr_schedule == "step"
    assert t.epochs == 20 and t.loss == {"name": "batch_hard"}  # margin: the loss's own 0.1
    assert (cfg.transform.image_size, t.input_size) == (252, 224)
    assert cfg.transform.pad_value == [124, 116, 104] and cfg.transform.crop == "none"
    assert cfg.data.train_range == [1, 98] and cfg.data.eval_range == [99, 196]
    assert Path(cfg.pipeline.root).is_absolute()


def test_demo_config_overrides_and_resolves_paths_relative_to_the_file():
    cfg = load_config(DEMO_FILE)
    assert cfg.trainer.backbone == "small"
    assert cfg.pipeline.root == str((DEMO_FILE.parent / "../out/demo/pipelines").resolve())
    assert cfg.trainer.learning_rate == pytest.approx(3e-3)  # the demo's
    assert cfg.trainer.class_hue_rotation == 0.5 and cfg.trainer.model_selection == "last"
    assert cfg.trainer.loss == {"name": "batch_hard"}  # untouched keys keep the defaults


@pytest.mark.parametrize("yaml_text, key", [
    ("trainer:\n  lerning_rate: 0.1\n", "trainer.lerning_rate"),
    ("trainr:\n  epochs: 1\n", "trainr"),
    ("trainer:\n  epochs: many\n", "trainer.epochs"),
    ("trainer:\n  epochs: 1.5\n", "trainer.epochs"),
    ("pipeline:\n  enable_cache: 1\n", "pipeline.enable_cache"),
    ("transform:\n  pad_value: [0, 0, 300]\n", "transform.pad_value"),
    ("trainer:\n  descriptors: SGX\n", "trainer.descriptors"),
    ("trainer:\n  embedding_dim: 100\n  descriptors: SMG\n", "trainer.embedding_dim"),
    ("trainer:\n  images_per_class: 1\n", "trainer.images_per_class"),
    ("trainer:\n  loss: triplet\n", "trainer.loss.name"),
    ("trainer:\n  loss: {margin: 0.1}\n", "trainer.loss.name"),
    ("trainer:\n  loss: 3\n", "trainer.loss"),
    ("data:\n  eval_classes: [90, 196]\n", "data.eval_classes"),
    ("data:\n  validation_classes: 98\n", "data.validation_classes"),
    ("data:\n  on_corrupt_image: ignore\n", "data.on_corrupt_image"),
    ("evaluator:\n  recall_ks: [0, 1]\n", "evaluator.recall_ks"),
    ("trainer:\n  loss: {name: batch_hard, margin: [0.1]}\n", "trainer.loss.margin"),
    ("trainer:\n  loss: {name: batch_hard, margin: null}\n", "trainer.loss.margin"),
    ("trainer:\n  margin: 0.1\n", "trainer.margin"),
    ("trainer:\n  backbone: small\n", "trainer.backbone_weights"),
    ("trainer:\n  input_size: 300\n", "trainer.input_size"),
    ("transform:\n  crop: box\n", "transform.crop"),
    ("evaluator:\n  confidence_level: 1.5\n", "evaluator.confidence_level"),
    ("serving:\n  grpc_port: 70000\n", "serving.grpc_port"),
    ("trainer:\n  class_hue_rotation: 0.7\n", "trainer.class_hue_rotation"),
    ("trainer:\n  class_hue_rotation: -0.1\n", "trainer.class_hue_rotation"),
    ("trainer:\n  model_selection: first\n", "trainer.model_selection"),
])
def test_errors_name_the_key_and_file(tmp_path, yaml_text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert f"'{key}'" in str(e.value) and str(path) in str(e.value)


@pytest.mark.parametrize("old_key, option", [
    ("margin", "margin"), ("hap2s_sigma", "sigma"), ("hap2s_alpha", "alpha"),
    ("npairs_temperature", "temperature"), ("angular_degrees", "degrees"),
])
def test_the_old_flat_loss_keys_name_the_new_form(tmp_path, old_key, option):
    path = tmp_path / "old.yaml"
    path.write_text(f"trainer:\n  loss: hap2s_exp\n  {old_key}: 0.25\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(path) in str(e.value)
    assert f"'trainer.{old_key}' is gone" in str(e.value)
    assert f"use trainer.loss: {{name: ..., {option}: 0.25}}" in str(e.value)


def test_a_loss_mapping_replaces_the_default_whole(tmp_path):
    """A loss's options belong to it: choosing another loss keeps none of the last one's."""
    path = tmp_path / "hap2s.yaml"
    path.write_text("trainer:\n  loss: {name: hap2s_exp, margin: 0.2, sigma: 0.3}\n")
    cfg = load_config(path)
    assert cfg.trainer.loss == {"name": "hap2s_exp", "margin": 0.2, "sigma": 0.3}
    assert cfg.trainer.loss_name == "hap2s_exp"
    assert load_config(path, {"trainer": {"loss": {"name": "npairs"}}}).trainer.loss == {
        "name": "npairs"}
    assert cfg.replace(trainer={"loss": "angular"}).trainer.loss == {"name": "angular"}


def test_the_loss_survives_the_trainer_job_round_trip():
    from core.config import TrainerJob

    cfg = load_config(overrides={"trainer": {"loss": {"name": "hap2s_poly", "alpha": 7}}})
    job = TrainerJob.from_dict(TrainerJob.of(cfg).to_dict())
    assert job.trainer.loss == {"name": "hap2s_poly", "alpha": 7}


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_replace_validates_like_a_file():
    cfg = load_config()
    assert cfg.replace(trainer={"epochs": 3}).trainer.epochs == 3
    with pytest.raises(ConfigError, match="'trainer.epochs'"):
        cfg.replace(trainer={"epochs": 0})


def test_split_of_class_holds_out_the_last_training_classes():
    data = load_config().data
    assert data.split_of_class(1) == "train"
    assert data.split_of_class(90) == "train"
    assert data.split_of_class(91) == "valid" and data.split_of_class(98) == "valid"
    assert data.split_of_class(99) == "eval" and data.split_of_class(196) == "eval"
    assert data.num_train_classes == 90


def test_remote_storage_urls_are_kept_as_is():
    cfg = load_config(None, {"data": {"source_dir": "gs://bucket/cars196"},
                             "pipeline": {"serving_dir": "s3://models/serving"}})
    assert cfg.data.source_dir == "gs://bucket/cars196"
    assert cfg.pipeline.serving_dir == "s3://models/serving"


@pytest.mark.parametrize("data, key", [
    ({"dataset": "imagenet"}, "data.dataset"),
    ({"dataset": "cub200", "train_classes": [1, 201]}, "data.train_classes"),
    ({"dataset": "sop", "train_classes": [1, 10]}, "data.train_classes"),
    ({"dataset": "cars196", "labels_csv": "labels.csv"}, "data.labels_csv"),
    ({"dataset": "folder", "eval_fraction": 1.0}, "data.eval_fraction"),
])
def test_dataset_settings_are_checked_naming_the_key(data, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(None, {"data": data})


def test_each_class_range_dataset_has_its_standard_split_and_others_split_by_protocol():
    cub = load_config(None, {"data": {"dataset": "cub200"}}).data
    assert (cub.train_range, cub.eval_range) == ([1, 100], [101, 200])
    assert cub.num_train_classes == 100 - cub.validation_classes
    sop = load_config(None, {"data": {"dataset": "sop"}}).data
    rule = sop.split_rule(load_config(None).evaluator)
    assert sop.train_range is None and rule["train_classes"] is None
    assert (rule["min_classes"], rule["min_queries"]) == (2, 20)


@pytest.mark.parametrize("data, evaluator, key, words", [
    # The eval range alone decides the eval classes: one class judges nothing.
    ({"eval_classes": [196, 196]}, {}, "data.eval_classes", "1 class(es), fewer than "
     "evaluator.min_eval_classes 2"),
    ({"dataset": "cub200", "eval_classes": [101, 104]}, {"min_eval_classes": 5},
     "data.eval_classes", "4 class(es), fewer than evaluator.min_eval_classes 5"),
    # A one-class validation split cannot select a model.
    ({"validation_classes": 1}, {}, "data.validation_classes", "use 0 (no hold-out"),
    # ...and a hold-out that leaves one training class cannot train one.
    ({"validation_classes": 97}, {}, "data.validation_classes", "leaves 1 of the 98 classes"),
])
def test_a_class_range_split_that_cannot_judge_fails_at_load(data, evaluator, key, words):
    with pytest.raises(ConfigError, match=f"'{key}' .*{re.escape(words)}"):
        load_config(None, {"data": data, "evaluator": evaluator})


def test_no_hold_out_and_the_smallest_judging_ranges_load():
    assert load_config(None, {"data": {"validation_classes": 0}}).data.validation_classes == 0
    cfg = load_config(None, {"data": {"train_classes": [1, 4], "eval_classes": [5, 6],
                                      "validation_classes": 2}})
    assert cfg.data.eval_range == [5, 6]


@pytest.mark.parametrize("evaluator, key", [
    ({"baseline_rule": "majority"}, "evaluator.baseline_rule"),
    ({"min_eval_classes": 1}, "evaluator.min_eval_classes"),
    ({"min_queries": 0}, "evaluator.min_queries"),
])
def test_gate_keys_are_checked(evaluator, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(None, {"evaluator": evaluator})


def test_the_gate_defaults():
    ev = load_config(None).evaluator
    assert (ev.baseline_rule, ev.min_eval_classes, ev.min_queries) == ("non_inferior", 2, 20)
    assert ev.baseline_tolerance > 0  # with 0, non-inferiority would demand a better model


def test_the_cropped_protocol_needs_a_dataset_with_boxes():
    with pytest.raises(ConfigError, match="'transform.crop' bbox needs bounding boxes.*'sop'"):
        load_config(None, {"data": {"dataset": "sop"}, "transform": {"crop": "bbox"}})
    assert load_config(None, {"data": {"dataset": "cub200"}, "transform": {"crop": "bbox"}})


# --------------------------------------------------------------------------- YAML loading

@pytest.mark.parametrize("yaml_text, key, lines", [
    # Two top-level blocks: PyYAML kept the last one, the first block's keys were lost.
    ("pipeline:\n  name: first\ntrainer:\n  epochs: 2\npipeline:\n  name: second\n",
     "pipeline", (1, 5)),
    ("trainer:\n  epochs: 2\n  learning_rate: 0.1\n  epochs: 3\n", "trainer.epochs", (2, 4)),
    ("kubeflow:\n  beam_args: []\n  volumes:\n    - {a: 1, a: 2}\n", "kubeflow.volumes[0].a",
     (4, 4)),
    ("trainer: {epochs: 1, 'epochs': 2}\n", "trainer.epochs", (1, 1)),
])
def test_a_key_given_twice_is_refused_naming_the_key_the_file_and_both_lines(
        tmp_path, yaml_text, key, lines):
    path = tmp_path / "twice.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    message = str(e.value)
    assert message == (f"{path}: duplicate key '{key}' at lines {lines[0]} and {lines[1]} "
                       "(YAML would keep only the last one: merge them into one)")


def test_yaml_merge_keys_may_be_overridden_and_an_empty_file_is_the_defaults(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text("serving: &base\n  grpc_port: 8600\n  rest_port: 8601\n"
                    "pipeline: {}\n")
    assert load_config(path).serving.grpc_port == 8600
    # "<<" brings keys in that the mapping may then override: not a duplicate.
    from core.config import _read_yaml
    merged = tmp_path / "merged.yaml"
    merged.write_text("a: &a {x: 1, y: 2}\nb:\n  <<: *a\n  x: 3\n")
    assert _read_yaml(merged) == {"a": {"x": 1, "y": 2}, "b": {"x": 3, "y": 2}}
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing set\n")
    assert load_config(empty) == load_config()


@pytest.mark.parametrize("yaml_text, message", [
    ("trainer:\n  step_per_epoch: 10\n",
     "unknown key 'trainer.step_per_epoch' (did you mean 'trainer.steps_per_epoch'?)"),
    ("trainr:\n  epochs: 1\n", "unknown key 'trainr' (did you mean 'trainer'?)"),
    ("evaluator:\n  recal_ks: [1]\n",
     "unknown key 'evaluator.recal_ks' (did you mean 'evaluator.recall_ks'?)"),
])
def test_a_misspelt_key_gets_the_closest_known_key(tmp_path, yaml_text, message):
    path = tmp_path / "typo.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: {message}"


def test_an_unknown_key_with_no_close_match_lists_only_its_sections_keys(tmp_path):
    from core.config import _read_yaml, DEFAULTS_FILE
    path = tmp_path / "unknown.yaml"
    path.write_text("serving:\n  colour: blue\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    serving_keys = ", ".join(sorted(_read_yaml(DEFAULTS_FILE)["serving"]))
    assert str(e.value) == (f"{path}: unknown key 'serving.colour' (the keys of 'serving' "
                            f"are: {serving_keys})")
    path.write_text("colour: blue\n")
    with pytest.raises(ConfigError, match=r"unknown key 'colour' \(the sections are: data, "):
        load_config(path)


def test_the_gallery_index_defaults():
    g = load_config().gallery_index
    assert (g.enabled, g.gallery, g.kind) == (True, "eval", "auto")
    assert (g.recall_k, g.recall_floor, g.recall_queries) == (10, 0.95, 1000)
    assert g.exact_below == 50000 and g.nlist == 0 and g.pq_m == 0


@pytest.mark.parametrize("yaml_text, key", [
    ("gallery_index:\n  kind: annoy\n", "gallery_index.kind"),
    ("gallery_index:\n  gallery: ''\n", "gallery_index.gallery"),
    ("gallery_index:\n  exact_below: -1\n", "gallery_index.exact_below"),
    ("gallery_index:\n  nlist: -5\n", "gallery_index.nlist"),
    ("gallery_index:\n  nprobe: 0\n", "gallery_index.nprobe"),
    ("gallery_index:\n  nlist: 16\n  nprobe: 32\n", "gallery_index.nprobe"),
    ("gallery_index:\n  pq_m: -1\n", "gallery_index.pq_m"),
    ("gallery_index:\n  hnsw_m: 1\n", "gallery_index.hnsw_m"),
    ("gallery_index:\n  ef_search: 0\n", "gallery_index.ef_search"),
    ("gallery_index:\n  recall_k: 0\n", "gallery_index.recall_k"),
    ("gallery_index:\n  recall_floor: 1.5\n", "gallery_index.recall_floor"),
    ("gallery_index:\n  recall_queries: 0\n", "gallery_index.recall_queries"),
    ("gallery_index:\n  seed: -1\n", "gallery_index.seed"),
    ("gallery_index:\n  enabled: 1\n", "gallery_index.enabled"),
    ("gallery_index:\n  nprobes: 8\n", "gallery_index.nprobes"),
])
def test_gallery_index_keys_are_checked_naming_the_key(tmp_path, yaml_text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert f"'{key}'" in str(e.value) and str(path) in str(e.value)


def test_every_gallery_index_kind_loads(tmp_path):
    from core.names import GALLERY_INDEX_KINDS
    for kind in GALLERY_INDEX_KINDS:
        assert load_config(overrides={"gallery_index": {"kind": kind}}).gallery_index.kind == kind


def test_a_gallery_path_is_resolved_against_the_config_file_and_eval_stays_a_name(tmp_path):
    (tmp_path / "sub").mkdir()
    config = tmp_path / "sub" / "c.yaml"
    config.write_text("gallery_index:\n  gallery: catalogue/items.csv\n")
    assert load_config(str(config)).gallery_index.gallery == str(tmp_path / "sub" / "catalogue"
                                                                  / "items.csv")
    config.write_text("gallery_index:\n  gallery: eval\n")
    assert load_config(str(config)).gallery_index.gallery == "eval"
