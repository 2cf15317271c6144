"""``cgd sample-data --dataset NAME``: a dataset's sample generator, by its name.

Each (``components/datasets/<name>/sample.py``, found by that convention) writes small data
in exactly its dataset's original layout (archives, list files, naming), readable by the
same source code as the real files.
"""

from __future__ import annotations

import importlib

from core.dataset_spec import all_specs, dataset_module, spec_for


def make_sample_data(dataset: str, out_dir: str, num_classes: int, images_per_class: int,
                     seed: int = 0, corrupt: int = 0, progress=None, real_size: bool = False):
    """Write ``dataset``'s sample into ``out_dir``; returns the generator's summary (its
    ``num_valid`` and ``corrupt`` are common to all).

    ``real_size``: real-photo image sizes instead of small ones (datasets whose spec has
    ``real_size_sample``).
    """
    module = dataset_module(dataset, "sample")  # an unknown name is an error here
    if real_size and not spec_for(dataset).real_size_sample:
        able = [s.name for s in all_specs() if s.real_size_sample]
        raise ValueError(f"--real-size is available for {', '.join(able)}, not {dataset}")
    extra = {"real_size": True} if real_size else {}
    return importlib.import_module(module).make_sample_data(
        out_dir, num_classes, images_per_class, seed=seed, corrupt=corrupt, progress=progress,
        **extra)
