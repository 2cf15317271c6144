"""A dataset is one folder and one spec (core/dataset_spec.py, components/datasets/<name>/):
the registry agrees with the folders and the config, the config checks data.* against the
chosen spec, and a new dataset needs only its folder and one registry entry.

The folders themselves (every registered name has spec, source, sample, README; what a
spec may import) are checked in tests/test_architecture.py."""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import textwrap

import pytest
import yaml

from core import dataset_spec, names
from core.config import DEFAULTS_FILE, DataConfig, load_config
from core.dataset_spec import ClassRanges, DatasetOption, DatasetSpec, all_specs, spec_for
from core.errors import ConfigError

COMMON_DATA_KEYS = {"dataset", "source_dir", "file_pattern", "train_classes", "eval_classes",
                    "validation_classes", "on_corrupt_image", "num_shards"}


# ------------------------------------------------------------------ the registry agrees

def test_each_registered_name_finds_its_own_spec_source_and_sample():
    for name in names.DATASETS:
        assert spec_for(name).name == name
        assert callable(importlib.import_module(
            dataset_spec.dataset_module(name, "source")).iter_records), name
        assert callable(importlib.import_module(
            dataset_spec.dataset_module(name, "sample")).make_sample_data), name


def test_an_unknown_dataset_is_refused_naming_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet' \(expected one of "
                                         r"\['cars196', 'cub200', 'sop', 'inshop', 'folder'\]"):
        spec_for("imagenet")


def test_every_spec_option_is_a_data_key_whose_default_is_the_specs():
    """An option is a flat data.<name> key (the YAML keys stayed): a field of DataConfig,
    with core/config.yaml's default equal to the spec's; every other data field is common."""
    yaml_data = yaml.safe_load(DEFAULTS_FILE.read_text())["data"]
    options = dataset_spec.shared_options()
    assert options, "the folder dataset's options"
    fields = {f.name for f in dataclasses.fields(DataConfig)}
    assert fields == COMMON_DATA_KEYS | set(options)
    assert {name: yaml_data[name] for name in options} == {
        name: default for name, (default, _) in options.items()}


def test_what_the_old_registries_said_is_in_the_specs():
    by_name = {spec.name: spec for spec in all_specs()}
    assert {n: (s.class_ranges.num_classes, s.class_ranges.train, s.class_ranges.eval)
            for n, s in by_name.items() if s.class_ranges} == {
        "cars196": (196, (1, 98), (99, 196)), "cub200": (200, (1, 100), (101, 200))}
    assert sorted(n for n, s in by_name.items() if s.has_boxes) == ["cars196", "cub200",
                                                                    "inshop"]
    assert [n for n, s in by_name.items() if s.images_in_archive] == ["cars196"]
    assert [n for n, s in by_name.items() if s.real_size_sample] == ["cars196"]
    assert {n: [o.name for o in s.options] for n, s in by_name.items() if s.options} == {
        "folder": ["labels_csv", "eval_fraction", "split_seed"]}


def test_two_datasets_giving_one_option_two_defaults_are_refused(monkeypatch):
    seed = DatasetOption("split_seed", 1, lambda v: None, "a seed")
    other = DatasetSpec(name="cub200", description="d", files="f", sample="s",
                        class_ranges=None, has_boxes=False, options=(seed,))
    real = dataset_spec.spec_for
    monkeypatch.setattr(dataset_spec, "spec_for",
                        lambda name: other if name == "cub200" else real(name))
    with pytest.raises(ValueError, match="option split_seed: default 0 of dataset folder "
                                         "differs from 1 of cub200"):
        dataset_spec.shared_options()


# ------------------------------------------------------------------ a spec checks itself

@pytest.mark.parametrize("ranges, words", [
    ((196, (1, 98), (99, 200)), r"class range eval \[99, 200\] is not within 1..196"),
    ((196, (0, 98), (99, 196)), r"class range train \[0, 98\] is not within 1..196"),
    ((196, (1, 100), (99, 196)), r"overlap: retrieval needs class-disjoint splits"),
])
def test_a_class_range_outside_the_classes_or_overlapping_is_refused(ranges, words):
    with pytest.raises(ValueError, match=words):
        ClassRanges(*ranges)


def test_an_option_whose_default_fails_its_own_check_is_refused():
    with pytest.raises(ValueError, match=r"option share: its default must be in \(0, 1\)"):
        DatasetOption("share", 1.5, lambda v: None if 0 < v < 1 else "must be in (0, 1)", "h")


def test_an_option_checks_the_type_of_its_default_and_restores_it_after_a_struct():
    seed = spec_for("folder").option("split_seed")
    assert seed.problem("7") == "must be int, got str '7'"
    assert seed.problem(True) == "must be int, got bool True"
    assert seed.problem(7) is None and seed.restore(7.0) == 7 and type(seed.restore(7.0)) is int
    fraction = spec_for("folder").option("eval_fraction")
    assert fraction.problem(1) == "must be in (0, 1), got 1" and fraction.problem(0.3) is None


# ------------------------------------------------------------------ the config checks data.*

@pytest.mark.parametrize("key, value", [("labels_csv", "labels.csv"), ("eval_fraction", 0.3),
                                        ("split_seed", 7)])
def test_a_folder_option_on_cars196_is_an_error_naming_the_key_and_the_dataset(key, value):
    with pytest.raises(ConfigError, match=rf"'data\.{key}' is an option of dataset 'folder' "
                                          r"only \(dataset is 'cars196'\)"):
        load_config(None, {"data": {"dataset": "cars196", key: value}})


def test_a_folder_option_left_at_its_default_is_fine_on_any_dataset():
    for name in names.DATASETS:
        data = load_config(None, {"data": {"dataset": name, "eval_fraction": 0.5,
                                           "split_seed": 0, "labels_csv": ""}}).data
        assert data.source_options == ({"labels_csv": "", "eval_fraction": 0.5,
                                        "split_seed": 0} if name == "folder" else {})


def test_a_folder_option_is_checked_by_the_folder_spec():
    with pytest.raises(ConfigError, match=r"'data\.eval_fraction' must be in \(0, 1\), got 0.0"):
        load_config(None, {"data": {"dataset": "folder", "eval_fraction": 0}})
    assert load_config(None, {"data": {"dataset": "folder", "eval_fraction": 0.2}}) \
        .data.source_options["eval_fraction"] == 0.2


@pytest.mark.parametrize("dataset", ["sop", "folder"])
def test_crop_bbox_on_a_dataset_without_boxes_names_those_with_boxes(dataset):
    with pytest.raises(ConfigError, match=rf"'transform.crop' bbox needs bounding boxes, which "
                                          rf"dataset '{dataset}' does not have \(datasets with "
                                          r"boxes: cars196, cub200, inshop\)"):
        load_config(None, {"data": {"dataset": dataset}, "transform": {"crop": "bbox"}})


def test_a_class_range_beyond_the_specs_classes_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"'data\.eval_classes' must be \[first, last\] with "
                                          r"1 <= first <= last <= 196 \(cars196 has 196"):
        load_config(None, {"data": {"dataset": "cars196", "eval_classes": [99, 197]}})


# ------------------------------------------------------------- a new dataset: its folder + one line

TOY_SPEC = '''
from core.dataset_spec import ClassRanges, DatasetSpec

SPEC = DatasetSpec(name="toy", description="four classes of one-line files",
                   files="<class>-<n>.txt", sample="--classes files per class",
                   class_ranges=ClassRanges(num_classes=4, train=(1, 2), eval=(3, 4)),
                   has_boxes=True)
'''
TOY_SOURCE = '''
import os

from components.datasets import records


def iter_records(source_dir, work_dir):
    for name in sorted(os.listdir(source_dir)):
        class_id = int(name.split("-")[0])
        yield records.record(os.path.join(source_dir, name), name, class_id, f"c{class_id}")
'''
TOY_SAMPLE = '''
import os

from components.datasets.records import SampleSummary


def make_sample_data(out_dir, num_classes, images_per_class, seed=0, corrupt=0,
                     progress=None):
    os.makedirs(out_dir, exist_ok=True)
    images = []
    for c in range(num_classes):
        for i in range(images_per_class):
            with open(os.path.join(out_dir, f"{c}-{i}.txt"), "w") as f:
                f.write("x")
            images.append((f"{c}-{i}.txt", c, ""))
    return SampleSummary(str(out_dir), images, [])
'''


@pytest.fixture
def toy_dataset(tmp_path, monkeypatch):
    """A dataset added as the README says: its folder (outside the repository, on the
    datasets package's path) and one entry in core.names.DATASETS. Nothing else changes."""
    import components.datasets

    folder = tmp_path / "datasets" / "toy"
    folder.mkdir(parents=True)
    for file, text in {"__init__.py": "", "spec.py": TOY_SPEC, "source.py": TOY_SOURCE,
                       "sample.py": TOY_SAMPLE}.items():
        (folder / file).write_text(textwrap.dedent(text))
    monkeypatch.setattr(components.datasets, "__path__",
                        list(components.datasets.__path__) + [str(folder.parent)])
    monkeypatch.setattr(names, "DATASETS", names.DATASETS + ("toy",))
    importlib.invalidate_caches()
    yield
    for module in [m for m in sys.modules if m.startswith("components.datasets.toy")]:
        del sys.modules[module]


def test_a_new_dataset_is_its_folder_and_one_registry_line(toy_dataset, tmp_path):
    from cli import pipeline_commands
    from components.datasets.samples import make_sample_data
    from components.example_gen import sources

    summary = make_sample_data("toy", str(tmp_path / "src"), 4, 3)
    assert summary.num_valid == 12
    cfg = load_config(None, {"data": {"dataset": "toy", "validation_classes": 0},
                             "transform": {"crop": "bbox"}})
    assert (cfg.data.train_range, cfg.data.eval_range) == ([1, 2], [3, 4])
    with pytest.raises(ConfigError, match=r"'data.train_classes' must be \[first, last\] with "
                                          r"1 <= first <= last <= 4 \(toy has 4 classes\)"):
        load_config(None, {"data": {"dataset": "toy", "train_classes": [1, 5]}})
    with pytest.raises(ConfigError, match=r"'data.split_seed' is an option of dataset "
                                          r"'folder' only \(dataset is 'toy'\)"):
        load_config(None, {"data": {"dataset": "toy", "validation_classes": 0,
                                    "split_seed": 3}})

    rule = cfg.data.split_rule(cfg.evaluator)
    parsed = list(sources.iter_records("toy", summary.out_dir, str(tmp_path / "work"),
                                       rule["source_options"]))
    keyed, left = sources.assign_splits(parsed, rule)
    assert sorted({(split, r["class_id"]) for split, r in keyed}) == [
        ("eval", 2), ("eval", 3), ("train", 0), ("train", 1)]
    assert left.outside_classes == 0

    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers()
    pipeline_commands.register(commands)
    assert parser.parse_args(["sample-data", "--dataset", "toy", "--out", "x"]).dataset == "toy"
    shown = " ".join(commands.choices["sample-data"].format_help().split())
    assert "toy, four classes of one-line files" in shown and "toy: <class>-<n>.txt" in shown


def test_without_its_registry_line_a_folder_is_not_a_dataset(toy_dataset, monkeypatch):
    monkeypatch.setattr(names, "DATASETS", tuple(n for n in names.DATASETS if n != "toy"))
    with pytest.raises(ConfigError, match=r"'data.dataset' must be one of .*got 'toy'"):
        load_config(None, {"data": {"dataset": "toy"}})
