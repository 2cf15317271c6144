"""The gallery index: embeddings of a gallery, searchable, bound to the model that made them.

Pure Python + NumPy + faiss (no TFX, no TensorFlow; imports only ``core`` and ``search``).
Embeddings are float32 and L2-normalised by the model; the metric is Euclidean and
distances are returned non-squared, as ``search.exact`` returns them.

Kinds (``gallery_index.kind``):

  exact     ``search.exact.nearest_neighbours`` over the float32 matrix: the very ranking
            the evaluator's Recall@K counts (ties go to the lower gallery row). faiss's
            IndexFlatL2 is as fast on 2 cores (docs/benchmarks.md, "Gallery search") but
            orders near-ties by its own arithmetic and heap, not by row.
  ivf_sq8   faiss ``IVF{nlist},SQ8``: 1 byte per dimension (+ 8 bytes of id per vector):
            0.28 of float32 at D=128 once the ids are counted.
  ivf_sq6   faiss ``IVF{nlist},SQ6``: 6 bits per dimension (+ 8 of id): 0.22 of float32 at
            D=128; recall@10 0.93-0.98 where SQ8 gives 0.99 (docs/benchmarks.md).
  ivf_pq    faiss ``IVF{nlist},PQ{pq_m}``: pq_m bytes per vector (+ 8 of id).
  ivf_flat  faiss ``IVF{nlist},Flat``: float32 vectors in inverted lists.
  hnsw      faiss ``HNSW{hnsw_m},Flat``: float32 vectors plus the graph (more than float32).
  auto      exact below ``exact_below`` gallery items, else ``AUTO_APPROXIMATE``.

Ids: our own table. Each vector gets a label, 0, 1, 2, ... in insertion order, never
reused; faiss stores labels (IVF with ``add_with_ids``, HNSW and the exact matrix by
position). ``remove`` deletes from IVF lists (``remove_ids``) and from the exact matrix
(compacted, order kept). HNSW cannot delete: a removed label becomes a tombstone,
filtered out inside the graph search (``SearchParametersHNSW.sel``), so a search still
returns k live hits; the vectors stay in the graph until the next build (each push
rebuilds the index with the new model).

Saved form: a directory, written into a sibling temp directory, every file fsynced,
``manifest.json`` written last (with each file's size and sha256), then moved into place.
A directory without a manifest is never taken as complete.

Thread safety: a readers-writer lock; searches run concurrently (faiss releases the GIL),
add/remove/save exclude each other and searches. Search parameters (nprobe, efSearch) are
passed per call, never set on the shared faiss object.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from typing import Iterable, Optional, Sequence

import numpy as np

from core.names import GALLERY_INDEX_KINDS
from search.exact import as_embeddings, nearest_neighbours, squared_distances, squared_norms, \
    topk_sorted

log = logging.getLogger("cgd.search.index")

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
KINDS = GALLERY_INDEX_KINDS
# What `auto` builds at and above exact_below. SQ8 keeps recall@10 >= 0.99 on every
# clustered set we tried; SQ6 meets the 1/4-of-float32 target (0.22 with ids
# against SQ8's 0.28) but its recall depends on the data (0.98 on the benchmark's, 0.93
# on tests/search/test_index.py's tighter clusters): the gate would refuse pushes, so it
# is opt-in (docs/benchmarks.md, "Gallery search").
AUTO_APPROXIMATE = "ivf_sq8"
# k-means trains on at most this many points per IVF list: faiss's default (256) makes
# the 1M-vector training 4x slower for no measurable recall (docs/benchmarks.md).
TRAIN_POINTS_PER_LIST = 64
_VECTORS_FILE = "vectors.npy"   # exact kind: the float32 matrix, rows in label order
_FAISS_FILE = "index.faiss"     # faiss.serialize_index bytes
_ROWS_FILE = "rows.json"        # {"labels": [...], "ids": [...], "metadata": [...], ...}


class GalleryIndexError(ValueError):
    """Base of the index's errors; the message names the directory or file, id or key."""


class MissingIndexError(GalleryIndexError):
    """No index there: the directory or its manifest (the last file a save writes) is absent."""


class CorruptIndexError(GalleryIndexError):
    """A file of the index does not match its manifest or cannot be read (names the file)."""


class ModelMismatchError(GalleryIndexError):
    """The index was made by another model, or has another dimension (names both)."""


class IndexQueryError(GalleryIndexError):
    """A bad query: k outside [1, size], wrong dimension, not finite."""


class DuplicateIdError(GalleryIndexError):
    """An add names ids that exist already (names them)."""


class UnknownIdError(GalleryIndexError):
    """A remove names ids that are not there (names them)."""


@dataclasses.dataclass(frozen=True)
class ModelStamp:
    """Who made the embeddings."""
    name: str
    fingerprint: str   # sha256 hex of the SavedModel's saved_model.pb (model_fingerprint)
    dimension: int
    version: str = ""  # the pushed version directory's name once known


@dataclasses.dataclass(frozen=True)
class Hit:
    id: str
    distance: float
    metadata: dict


def model_fingerprint(saved_model_dir: str) -> str:
    """sha256 hex of ``<saved_model_dir>/saved_model.pb``, read as bytes (no TensorFlow)."""
    path = os.path.join(saved_model_dir, "saved_model.pb")
    try:
        return _sha256_file(path)
    except OSError as e:
        raise MissingIndexError(f"cannot fingerprint the model: {path}: {e.strerror}") from None


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer blocks new readers (no starvation)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def read(self):
        return _Held(self, False)

    def write(self):
        return _Held(self, True)

    def acquire(self, write: bool) -> None:
        with self._cond:
            if write:
                self._writers_waiting += 1
                while self._writer or self._readers:
                    self._cond.wait()
                self._writers_waiting -= 1
                self._writer = True
            else:
                while self._writer or self._writers_waiting:
                    self._cond.wait()
                self._readers += 1

    def release(self, write: bool) -> None:
        with self._cond:
            if write:
                self._writer = False
            else:
                self._readers -= 1
            self._cond.notify_all()


class _Held:
    def __init__(self, lock: _ReadWriteLock, write: bool):
        self._lock, self._write = lock, write

    def __enter__(self):
        self._lock.acquire(self._write)

    def __exit__(self, *exc):
        self._lock.release(self._write)


def resolve_kind(config, size: int) -> str:
    """The kind ``config`` builds for a gallery of ``size`` items."""
    if config.kind == "auto":
        return "exact" if size < config.exact_below else AUTO_APPROXIMATE
    return config.kind


def auto_nlist(size: int) -> int:
    """About 4 sqrt(N) lists (faiss's guideline), at most N / 39 (k-means needs 39 points
    per centroid), at least 1."""
    return max(1, min(int(4 * math.sqrt(size)), size // 39))


def factory_string(kind: str, dimension: int, size: int, config) -> str:
    """The faiss index_factory string of an approximate kind for this gallery."""
    nlist = config.nlist or auto_nlist(size)
    if kind == "ivf_flat":
        return f"IVF{nlist},Flat"
    if kind in ("ivf_sq8", "ivf_sq6"):
        return f"IVF{nlist},SQ{kind[-1]}"
    if kind == "ivf_pq":
        m = config.pq_m or max(1, dimension // 4)
        if dimension % m:
            raise GalleryIndexError(
                f"gallery_index.pq_m {m} must divide the embedding dimension {dimension}")
        return f"IVF{nlist},PQ{m}"
    if kind == "hnsw":
        return f"HNSW{config.hnsw_m},Flat"
    raise GalleryIndexError(f"gallery_index.kind {kind!r} is not an approximate kind")


class GalleryIndex:
    """A searchable gallery bound to one model (see the module docstring)."""

    def __init__(self, *, kind: str, model: ModelStamp, labels, ids, metadata,
                 next_label: int, vectors=None, faiss_index=None, faiss_factory: str = "",
                 nprobe: int = 1, ef_search: int = 16, tombstones=(),
                 catalogue_seq: int = 0, created: float = 0.0):
        """Internal: use ``build`` or ``load``."""
        self.kind = kind
        self.model = model
        self.faiss_factory = faiss_factory
        self.nprobe = int(nprobe)
        self.ef_search = int(ef_search)
        # The journal's last sequence number folded into this index (search.catalogue).
        self.catalogue_seq = int(catalogue_seq)
        self.created = created or time.time()
        self._lock = _ReadWriteLock()
        self._faiss = faiss_index
        # Exact kind: the float32 rows of the live labels, in label order. Approximate
        # kinds built in this process keep it too (for recall_against_exact); loaded ones
        # do not (memory is the point of them).
        self._vectors = vectors
        self._labels = np.asarray(labels, dtype=np.int64)  # live labels, ascending
        self._id_of: dict[int, str] = dict(zip(self._labels.tolist(), ids))
        self._label_of: dict[str, int] = {i: lab for lab, i in self._id_of.items()}
        self._meta_of: dict[int, dict] = {
            lab: m for lab, m in zip(self._labels.tolist(), metadata) if m}
        self._next_label = int(next_label)
        self._tombstones = set(int(t) for t in tombstones)  # hnsw: removed, still in the graph
        self._selector = None
        self._refresh_selector()

    # ------------------------------------------------------------------ build

    @classmethod
    def build(cls, embeddings, ids: Sequence[str], metadata: Optional[Sequence[dict]],
              config, model: ModelStamp) -> "GalleryIndex":
        """Index ``embeddings`` [N, D] (row i is ``ids[i]``) with the kind ``config`` picks."""
        x = _as_float32(embeddings, "embeddings")
        ids = _check_ids(ids, x.shape[0])
        metadata = _check_metadata(metadata, x.shape[0])
        if x.shape[1] != model.dimension:
            raise ModelMismatchError(
                f"embeddings have dimension {x.shape[1]} but model {model.name!r} "
                f"({model.fingerprint[:12]}) has dimension {model.dimension}")
        kind = resolve_kind(config, x.shape[0])
        labels = np.arange(x.shape[0], dtype=np.int64)
        common = dict(model=model, labels=labels, ids=ids, metadata=metadata,
                      next_label=x.shape[0], nprobe=config.nprobe, ef_search=config.ef_search)
        if kind == "exact":
            return cls(kind=kind, vectors=x, **common)
        import faiss
        factory = factory_string(kind, x.shape[1], x.shape[0], config)
        index = faiss.index_factory(x.shape[1], factory, faiss.METRIC_L2)
        if kind.startswith("ivf"):
            ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
            if kind == "ivf_pq":
                # Polysemous training (codes reordered for Hamming filtering, which we
                # never use) costs 7x the whole PQ training.
                ivf.do_polysemous_training = False
            ivf.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
            ivf.cp.seed = int(config.seed)
            index.train(x)
            index.add_with_ids(x, labels)
        else:
            index.add(x)  # HNSW labels are positions: 0..N-1, the labels above
        return cls(kind=kind, vectors=x, faiss_index=index, faiss_factory=factory, **common)

    # ----------------------------------------------------------------- queries

    @property
    def size(self) -> int:
        return int(self._labels.size)

    @property
    def dimension(self) -> int:
        return int(self.model.dimension)

    def __len__(self) -> int:
        return self.size

    def ids(self) -> list[str]:
        """The live ids in label (insertion) order."""
        with self._lock.read():
            return [self._id_of[lab] for lab in self._labels.tolist()]

    def __contains__(self, item_id: str) -> bool:
        with self._lock.read():
            return item_id in self._label_of

    def search(self, queries, k: int) -> list[list[Hit]]:
        """The k nearest gallery items of each query, nearest first.

        An approximate index can return fewer than k hits for a query when the probed
        lists hold fewer live items (never for the exact kind).
        """
        q = self._check_queries(queries)
        with self._lock.read():
            self._check_k(k)
            labels, distances = self._search_labels(q, int(k))
            return [[Hit(self._id_of[lab], float(dist), self._meta_of.get(lab, {}))
                     for lab, dist in zip(row_l.tolist(), row_d.tolist()) if lab >= 0]
                    for row_l, row_d in zip(labels, distances)]

    def _search_labels(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(labels [Q, k] (-1 = none), non-squared distances [Q, k]); lock held."""
        if self.kind == "exact":
            rows, distances = nearest_neighbours(q, self._vectors, k)
            return self._labels[rows], distances
        import faiss
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
        else:
            params = faiss.SearchParametersIVF(nprobe=self.nprobe)
        if self._selector is not None:
            params.sel = self._selector
        d2, labels = self._faiss.search(q, k, params=params)
        return labels, np.sqrt(np.maximum(d2, 0.0))

    def recall_against_exact(self, k: int, queries: int, seed: int,
                             embeddings=None) -> float:
        """Mean recall@k of this index against exact search, on ``queries`` gallery rows
        sampled with ``seed`` as queries; each query's own item is excluded from both
        rankings. 1.0 for the exact kind (it is exact search).

        The exact ranking needs the float32 rows: kept when the index was built in this
        process, else pass ``embeddings`` [size, D] in ``ids()`` order.
        """
        with self._lock.read():
            vectors = self._vectors if embeddings is None else _as_float32(
                embeddings, "embeddings")
            if vectors is None:
                raise GalleryIndexError(
                    "recall_against_exact needs the float32 embeddings of a loaded "
                    f"{self.kind} index (pass embeddings=, in ids() order)")
            if vectors.shape != (self.size, self.dimension):
                raise GalleryIndexError(
                    f"embeddings have shape {vectors.shape}, the index holds "
                    f"{(self.size, self.dimension)}")
            if not 1 <= k < self.size:
                raise IndexQueryError(f"k must be in [1, {self.size - 1}] (the query's own "
                                      f"item is excluded), got {k!r}")
            rng = np.random.default_rng(seed)
            rows = np.sort(rng.choice(self.size, size=min(queries, self.size), replace=False))
            q = vectors[rows]
            d2 = squared_distances(q, squared_norms(q), vectors, squared_norms(vectors))
            d2[np.arange(rows.size), rows] = np.inf
            truth = self._labels[topk_sorted(d2, k)]
            del d2
            if self.kind == "exact":
                return 1.0
            found, _ = self._search_labels(q, min(k + 1, self.size))
            own = self._labels[rows]
            hits = 0
            for t, f, me in zip(truth, found, own):
                f = f[(f != me) & (f >= 0)][:k]
                hits += np.intersect1d(t, f).size
            return hits / float(rows.size * k)

    # ----------------------------------------------------------------- updates

    def add(self, ids: Sequence[str], embeddings, metadata: Optional[Sequence[dict]] = None
            ) -> None:
        """Append items; refused whole (DuplicateIdError naming them) if any id exists."""
        x = _as_float32(embeddings, "embeddings")
        ids = _check_ids(ids, x.shape[0])
        metadata = _check_metadata(metadata, x.shape[0])
        if x.shape[1] != self.dimension:
            raise IndexQueryError(f"embeddings have dimension {x.shape[1]}, the index "
                                  f"{self.dimension}")
        with self._lock.write():
            existing = [i for i in ids if i in self._label_of]
            if existing:
                raise DuplicateIdError(f"ids already in the index: {_names(existing)}")
            labels = np.arange(self._next_label, self._next_label + len(ids), dtype=np.int64)
            if self._faiss is not None:
                if self.kind == "hnsw":
                    self._faiss.add(x)
                else:
                    self._faiss.add_with_ids(x, labels)
            if self._vectors is not None:
                self._vectors = np.concatenate([self._vectors, x])
            self._next_label += len(ids)
            self._labels = np.concatenate([self._labels, labels])
            for lab, item_id, meta in zip(labels.tolist(), ids, metadata):
                self._id_of[lab] = item_id
                self._label_of[item_id] = lab
                if meta:
                    self._meta_of[lab] = meta

    def remove(self, ids: Iterable[str]) -> None:
        """Remove items; refused whole (UnknownIdError naming them) if any id is absent."""
        ids = list(ids)
        with self._lock.write():
            unknown = [i for i in ids if i not in self._label_of]
            if unknown:
                raise UnknownIdError(f"ids not in the index: {_names(unknown)}")
            if len(set(ids)) != len(ids):
                raise UnknownIdError(f"ids named twice: {_names(_repeated(ids))}")
            if self.size - len(ids) < 1:
                raise GalleryIndexError("a remove may not empty the index (it would answer "
                                        "nothing); rebuild it instead")
            labels = np.array(sorted(self._label_of[i] for i in ids), dtype=np.int64)
            keep = ~np.isin(self._labels, labels)
            if self.kind == "hnsw":
                self._tombstones.update(labels.tolist())
                self._refresh_selector()
            elif self._faiss is not None:
                import faiss
                self._faiss.remove_ids(faiss.IDSelectorBatch(labels))
            if self._vectors is not None:
                self._vectors = self._vectors[keep]
            self._labels = self._labels[keep]
            for lab in labels.tolist():
                del self._label_of[self._id_of.pop(lab)]
                self._meta_of.pop(lab, None)

    def _refresh_selector(self) -> None:
        if not self._tombstones:
            self._selector = None
            return
        import faiss
        dead = np.array(sorted(self._tombstones), dtype=np.int64)
        # Kept referenced: faiss selectors hold raw pointers to what they wrap.
        self._dead_batch = faiss.IDSelectorBatch(dead)
        self._selector = faiss.IDSelectorNot(self._dead_batch)

    # ------------------------------------------------------------ save / load

    def save(self, directory: str) -> None:
        """Write the index to ``directory`` atomically (see the module docstring).

        A crash leaves the previous directory intact (or, between the two renames of a
        replacement, no directory and the old one beside it as ``.<name>.old-*``).
        """
        directory = os.path.abspath(directory)
        parent, name = os.path.split(directory)
        os.makedirs(parent, exist_ok=True)
        with self._lock.read():
            tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
            try:
                files = {}
                if self.kind == "exact":
                    files[_VECTORS_FILE] = _write_file(
                        tmp, _VECTORS_FILE, lambda f: np.save(f, self._vectors))
                else:
                    import faiss
                    data = faiss.serialize_index(self._faiss)
                    files[_FAISS_FILE] = _write_file(tmp, _FAISS_FILE,
                                                     lambda f: f.write(data.tobytes()))
                    del data
                rows = {"labels": self._labels.tolist(),
                        "ids": [self._id_of[lab] for lab in self._labels.tolist()],
                        "metadata": [self._meta_of.get(lab) for lab in self._labels.tolist()],
                        "tombstones": sorted(self._tombstones)}
                files[_ROWS_FILE] = _write_file(
                    tmp, _ROWS_FILE, lambda f: f.write(json.dumps(rows).encode()))
                manifest = {
                    "format_version": FORMAT_VERSION, "kind": self.kind,
                    "faiss_factory": self.faiss_factory, "size": self.size,
                    "dimension": self.dimension, "model": dataclasses.asdict(self.model),
                    "nprobe": self.nprobe, "ef_search": self.ef_search,
                    "next_label": self._next_label, "catalogue_seq": self.catalogue_seq,
                    "files": files, "created": self.created,
                }
                _write_file(tmp, MANIFEST,
                            lambda f: f.write(json.dumps(manifest, indent=1).encode()))
                _fsync_dir(tmp)
                _replace_dir(tmp, directory)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise

    @classmethod
    def load(cls, directory: str, expect: ModelStamp | None = None) -> "GalleryIndex":
        """Read an index saved by ``save``; refuses an incomplete, corrupt or foreign one."""
        directory = os.path.abspath(directory)
        manifest = read_manifest(directory)
        model = ModelStamp(**manifest["model"])
        if expect is not None:
            if expect.fingerprint != model.fingerprint:
                raise ModelMismatchError(
                    f"{directory}: the index was built by model fingerprint "
                    f"{model.fingerprint} ({model.name} version {model.version or '?'}), "
                    f"the model is {expect.fingerprint} ({expect.name} version "
                    f"{expect.version or '?'})")
            if expect.dimension != model.dimension:
                raise ModelMismatchError(
                    f"{directory}: the index has dimension {model.dimension}, the model "
                    f"{expect.dimension}")
        files = manifest["files"]
        for name, entry in files.items():
            path = os.path.join(directory, name)
            if not os.path.isfile(path):
                raise CorruptIndexError(f"{path}: missing (listed in {MANIFEST})")
            if os.path.getsize(path) != entry["bytes"] or _sha256_file(path) != entry["sha256"]:
                raise CorruptIndexError(f"{path}: size or sha256 differs from {MANIFEST}")
        rows_path = os.path.join(directory, _ROWS_FILE)
        try:
            with open(rows_path) as f:
                rows = json.load(f)
        except (OSError, ValueError) as e:
            raise CorruptIndexError(f"{rows_path}: unreadable: {e}") from None
        kind, vectors, index = manifest["kind"], None, None
        if kind == "exact":
            path = os.path.join(directory, _VECTORS_FILE)
            try:
                vectors = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise CorruptIndexError(f"{path}: unreadable: {e}") from None
            shape = (len(rows["labels"]), model.dimension)
            if vectors.shape != shape or vectors.dtype != np.float32:
                raise CorruptIndexError(f"{path}: holds {vectors.dtype} {vectors.shape}, "
                                        f"expected float32 {shape}")
        else:
            import faiss
            path = os.path.join(directory, _FAISS_FILE)
            try:
                index = faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
            except (OSError, RuntimeError) as e:
                raise CorruptIndexError(f"{path}: unreadable by faiss: {e}") from None
            live = len(rows["labels"]) + len(rows["tombstones"])
            if index.ntotal != live or index.d != model.dimension:
                raise CorruptIndexError(f"{path}: holds {index.ntotal} vectors of dimension "
                                        f"{index.d}, {_ROWS_FILE} {live} of "
                                        f"{model.dimension}")
        return cls(kind=kind, model=model, labels=rows["labels"], ids=rows["ids"],
                   metadata=rows["metadata"], next_label=manifest["next_label"],
                   vectors=vectors, faiss_index=index, faiss_factory=manifest["faiss_factory"],
                   nprobe=manifest["nprobe"], ef_search=manifest["ef_search"],
                   tombstones=rows["tombstones"], catalogue_seq=manifest["catalogue_seq"],
                   created=manifest["created"])

    def nbytes(self) -> int:
        """Bytes of the searchable structure (faiss index or float32 matrix), without ids."""
        with self._lock.read():
            if self.kind == "exact":
                return int(self._vectors.nbytes)
            import faiss
            return int(faiss.serialize_index(self._faiss).nbytes)

    # ---------------------------------------------------------------- helpers

    def _check_queries(self, queries) -> np.ndarray:
        try:
            q = _as_float32(queries, "queries")
        except ValueError as e:
            raise IndexQueryError(str(e)) from None
        if q.shape[1] != self.dimension:
            raise IndexQueryError(f"queries have dimension {q.shape[1]}, the index "
                                  f"{self.dimension} (model {self.model.name!r})")
        return q

    def _check_k(self, k) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or \
                not 1 <= k <= self.size:
            raise IndexQueryError(f"k must be an integer in [1, {self.size}] (the gallery's "
                                  f"size), got {k!r}")


def read_manifest(directory: str) -> dict:
    """The manifest of a saved index; MissingIndexError without one, CorruptIndexError if
    it is unreadable or of another format."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.isdir(directory):
        raise MissingIndexError(f"{directory}: no index directory")
    if not os.path.isfile(path):
        raise MissingIndexError(f"{path}: missing: the index in {directory} is incomplete "
                                "(a save writes its manifest last)")
    try:
        with open(path) as f:
            manifest = json.load(f)
        if manifest["format_version"] != FORMAT_VERSION:
            raise CorruptIndexError(f"{path}: format_version {manifest['format_version']}, "
                                    f"this code reads {FORMAT_VERSION}")
        manifest["model"], manifest["files"]  # noqa: B018 (presence check)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CorruptIndexError(f"{path}: unreadable: {e!r}") from None
    return manifest


def _as_float32(x, name: str) -> np.ndarray:
    arr = as_embeddings(x, name)
    return arr if arr.dtype == np.float32 else arr.astype(np.float32)


def _check_ids(ids, n: int) -> list[str]:
    ids = list(ids)
    if len(ids) != n:
        raise GalleryIndexError(f"{len(ids)} ids for {n} embeddings")
    bad = [i for i in ids if not isinstance(i, str) or not i]
    if bad:
        raise GalleryIndexError(f"ids must be non-empty strings, got {_names(bad)}")
    if len(set(ids)) != n:
        raise DuplicateIdError(f"ids given twice: {_names(_repeated(ids))}")
    return ids


def _check_metadata(metadata, n: int) -> list:
    if metadata is None:
        return [None] * n
    metadata = list(metadata)
    if len(metadata) != n:
        raise GalleryIndexError(f"{len(metadata)} metadata entries for {n} embeddings")
    for i, m in enumerate(metadata):
        if m is not None and not isinstance(m, dict):
            raise GalleryIndexError(f"metadata[{i}] must be a dict or None, got "
                                    f"{type(m).__name__}")
    return metadata


def _repeated(ids) -> list:
    seen, twice = set(), []
    for i in ids:
        if i in seen and i not in twice:
            twice.append(i)
        seen.add(i)
    return twice


def _names(ids, limit: int = 10) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _write_file(directory: str, name: str, write) -> dict:
    """Write, flush and fsync one file; its manifest entry {bytes, sha256}."""
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    return {"bytes": os.path.getsize(path), "sha256": _sha256_file(path)}


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_dir(tmp: str, directory: str) -> None:
    """Move the finished ``tmp`` to ``directory``; an existing one is moved aside first
    (rename cannot replace a non-empty directory) and deleted after."""
    parent, name = os.path.split(directory)
    old = None
    if os.path.lexists(directory):
        old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
        os.replace(directory, old)  # onto the empty placeholder
    os.replace(tmp, directory)
    _fsync_dir(parent)
    if old:
        shutil.rmtree(old, ignore_errors=True)
