"""``cgd sample-data --dataset NAME``: the sample generator of each dataset, by name.

Each writes small data in exactly its dataset's original layout (archives, list files,
naming), readable by the same source code as the real files.
"""

from __future__ import annotations

import importlib

from core.names import DATASETS

SAMPLE_MODULES = {
    "cars196": "components.datasets.cars196.sample",
    "cub200": "components.datasets.cub200.sample",
    "sop": "components.datasets.sop.sample",
    "inshop": "components.datasets.inshop.sample",
    "folder": "components.datasets.folder.sample",
}
assert set(SAMPLE_MODULES) == set(DATASETS)
# Datasets whose generator can draw real-photo-sized images (``real_size``).
REAL_SIZE_DATASETS = ("cars196",)


def make_sample_data(dataset: str, out_dir: str, num_classes: int, images_per_class: int,
                     seed: int = 0, corrupt: int = 0, progress=None, real_size: bool = False):
    """Write ``dataset``'s sample into ``out_dir``; returns the generator's summary (its
    ``num_valid`` and ``corrupt`` are common to all).

    ``real_size``: real-photo image sizes instead of small ones (``REAL_SIZE_DATASETS``).
    """
    if dataset not in SAMPLE_MODULES:
        raise ValueError(f"unknown dataset {dataset!r} (expected one of {list(SAMPLE_MODULES)})")
    if real_size and dataset not in REAL_SIZE_DATASETS:
        raise ValueError(f"--real-size is available for {', '.join(REAL_SIZE_DATASETS)}, "
                         f"not {dataset}")
    module = importlib.import_module(SAMPLE_MODULES[dataset])
    extra = {"real_size": True} if real_size else {}
    return module.make_sample_data(out_dir, num_classes, images_per_class, seed=seed,
                                   corrupt=corrupt, progress=progress, **extra)
