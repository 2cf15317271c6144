"""Random embeddings with exact ties and duplicates, for the search and metrics tests.

* "grid" embeddings: values on a 1/4 grid in float32, so every distance is
  computed exactly by both implementations. Ties are frequent and exact, and
  duplicated embeddings across classes test the tie rule (lower index first).
* Gaussian float64 embeddings with duplicated rows (a duplicate keeps its
  label, like a duplicate image in a dataset).
"""

import numpy as np


def grid_data(seed, n=120, dim=6, num_classes=9, dup_frac=0.2):
    """Exactly-representable float32 embeddings, random class sizes, duplicates."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-4, 5, size=(n, dim)).astype(np.float32) / 4
    labels = rng.integers(0, num_classes, size=n)
    dup = rng.choice(n, size=int(dup_frac * n), replace=False)
    x[dup] = x[rng.integers(0, n, size=dup.size)]  # copies, possibly of another class
    return x, labels


def gaussian_data(seed, n=150, dim=12, num_classes=12, dup_frac=0.1):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_classes, dim))
    labels = rng.integers(0, num_classes, size=n)
    x = centres[labels] + 0.9 * rng.standard_normal((n, dim))
    src = rng.choice(n, size=int(dup_frac * n), replace=False)
    dst = rng.choice(n, size=src.size, replace=False)
    x[dst], labels[dst] = x[src], labels[src]
    return x, labels
