"""What a dataset is, as data: its ``DatasetSpec``, and where each dataset's spec lives.

A dataset is one folder, ``components/datasets/<name>/``: ``spec.py`` (``SPEC``, a
``DatasetSpec``), ``source.py`` (``iter_records(source_dir, work_dir, **options)``),
``sample.py`` (``make_sample_data(out_dir, num_classes, images_per_class, ...)``) and a
README. ``core.names.DATASETS`` is the one list of them: adding a dataset is its folder
plus one entry there.

Layering: the config (core) validates ``data.*`` against the chosen dataset's spec, but
core imports nothing of ours. The specs are pure data that import only core, so they are
layer 0 in effect although they sit in their dataset's folder; ``spec_for`` is the one
place core reaches into ``components/``, by name, and only for ``spec`` modules
(``tests/test_architecture.py`` checks both).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable, Optional, Union

from core import names

# The package holding one folder per dataset, and the modules found there by convention.
DATASETS_PACKAGE = "components.datasets"
DATASET_MODULES = ("spec", "source", "sample")

OptionValue = Union[str, int, float]


@dataclasses.dataclass(frozen=True)
class ClassRanges:
    """A dataset split by configured class ranges (``data.train_classes``/``eval_classes``,
    1-based, inclusive), and its standard split."""
    num_classes: int
    train: tuple[int, int]
    eval: tuple[int, int]

    def __post_init__(self):
        for key in ("train", "eval"):
            lo, hi = getattr(self, key)
            if not 1 <= lo <= hi <= self.num_classes:
                raise ValueError(f"class range {key} {[lo, hi]} is not within "
                                 f"1..{self.num_classes}")
        if self.train[0] <= self.eval[1] and self.eval[0] <= self.train[1]:
            raise ValueError(f"class ranges train {list(self.train)} and eval "
                             f"{list(self.eval)} overlap: retrieval needs class-disjoint splits")


def _type_problem(value, default) -> Optional[str]:
    """Why ``value`` is not of the option's type (its default's), or None."""
    kind = type(default)
    if isinstance(value, bool) != isinstance(default, bool):
        return f"must be {kind.__name__}, got {type(value).__name__} {value!r}"
    if kind is float and isinstance(value, (int, float)):
        return None
    if not isinstance(value, kind):
        return f"must be {kind.__name__}, got {type(value).__name__} {value!r}"
    return None


@dataclasses.dataclass(frozen=True)
class DatasetOption:
    """A keyword option of a dataset's source, set as ``data.<name>`` in the config.

    ``check(value)``: the problem with a value of the right type ("must be in (0, 1), got
    1.0"), or None. ``moves_classes``: the option decides which classes go to eval (a
    split too small to judge names it as the key to change).
    """
    name: str
    default: OptionValue
    check: Callable[[OptionValue], Optional[str]]
    help: str
    moves_classes: bool = False

    def __post_init__(self):
        problem = self.problem(self.default)
        if problem:
            raise ValueError(f"option {self.name}: its default {problem}")

    def problem(self, value) -> Optional[str]:
        """Why ``value`` cannot be this option's value, or None."""
        return _type_problem(value, self.default) or self.check(value)

    def restore(self, value) -> OptionValue:
        """``value`` after a JSON or protobuf Struct round trip (every number a double)."""
        if isinstance(self.default, int) and not isinstance(self.default, bool):
            return int(value)
        return value


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the pipeline needs to know of a dataset before reading any of its files.

    ``class_ranges``: None for a dataset split by its own protocol (SOP's Ebay_train/test,
    In-shop's partition file, a folder's hashed split). ``images_in_archive``: its source
    can leave the images inside the inflated archives for Beam to read there.
    ``real_size_sample``: its sample generator can draw real-photo-sized images.
    """
    name: str
    description: str           # one line, for help text
    files: str                 # what data.source_dir holds, as downloaded
    sample: str                # what `cgd sample-data` makes of --classes / --images-per-class
    class_ranges: Optional[ClassRanges]
    has_boxes: bool
    images_in_archive: bool = False
    real_size_sample: bool = False
    options: tuple[DatasetOption, ...] = ()

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"dataset name {self.name!r} must be a Python identifier "
                             "(it is its folder's package name)")
        seen = [o.name for o in self.options]
        if len(set(seen)) != len(seen):
            raise ValueError(f"dataset {self.name}: an option is declared twice: {seen}")

    def option(self, name: str) -> DatasetOption:
        for option in self.options:
            if option.name == name:
                return option
        raise KeyError(f"dataset {self.name!r} has no option {name!r}")


def dataset_names() -> tuple[str, ...]:
    """The registry: ``core.names.DATASETS``, read at call time."""
    return tuple(names.DATASETS)


def dataset_module(name: str, part: str) -> str:
    """The dotted module of a dataset's ``part`` ("spec", "source" or "sample")."""
    if part not in DATASET_MODULES:
        raise ValueError(f"unknown dataset module {part!r} (expected one of {DATASET_MODULES})")
    if name not in dataset_names():
        raise ValueError(f"unknown dataset {name!r} (expected one of {list(dataset_names())})")
    return f"{DATASETS_PACKAGE}.{name}.{part}"


def spec_for(name: str) -> DatasetSpec:
    """The ``SPEC`` of ``components/datasets/<name>/spec.py``."""
    spec = importlib.import_module(dataset_module(name, "spec")).SPEC
    if not isinstance(spec, DatasetSpec) or spec.name != name:
        raise TypeError(f"{dataset_module(name, 'spec')}.SPEC must be a DatasetSpec named "
                        f"{name!r}, got {spec!r}")
    return spec


def all_specs() -> tuple[DatasetSpec, ...]:
    return tuple(spec_for(name) for name in dataset_names())


def shared_options() -> dict[str, tuple[OptionValue, tuple[str, ...]]]:
    """{option name: (default, the datasets taking it)} over every dataset.

    Raises ValueError when two datasets give one option different defaults: the config has
    one ``data.<option>`` key, with one default.
    """
    found: dict[str, tuple[OptionValue, tuple[str, ...]]] = {}
    for spec in all_specs():
        for option in spec.options:
            default, owners = found.get(option.name, (option.default, ()))
            if default != option.default:
                raise ValueError(f"option {option.name}: default {option.default!r} of dataset "
                                 f"{spec.name} differs from {default!r} of {', '.join(owners)}")
            found[option.name] = (default, owners + (spec.name,))
    return found
