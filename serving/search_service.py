"""The search service's core: the (model version, gallery index) pair, queries, catalogue edits.

A version's index lives inside its SavedModel (``<version>/assets.extra/gallery_index/``,
``core.names.INDEX_DIR``), pushed with it as one directory. The service serves the
newest complete version whose index loads and belongs to that model, as a *pair*:

* a query takes the pair once, at its start, asks the embedding server for exactly
  that version (``model_spec.version``) and searches that pair's index, so a query in
  flight finishes on the pair it started with and no answer mixes two models;
* a new version becomes the pair once the embedding server serves it (``GetModelMetadata``
  of that version) and its index has loaded, matched the model and had the catalogue
  replayed; until then the previous pair serves. A refused version (index missing, corrupt,
  of another model) is in ``version_states`` with why, and retried once its files change.

The living catalogue (``search.catalogue.Catalogue`` at ``<model>/catalogue/``): an add
is embedded with the pair's model, added to its index (ALREADY_EXISTS before anything
is written if the id exists), then persisted; a remove likewise. On every switch, start
and poll, the catalogue's ops after the index's ``catalogue_seq`` are replayed onto the
index (adds embedded once per version: ``EmbeddingCache``), so additions survive restarts
and pushes and reach every replica. Edits and switches are serialised by one lock;
searches take none (the index is safe for concurrent search/add/remove).

Protocol-free: the adapters (``serving.search_grpc``, ``serving.search_rest``) convert
wire formats. Imports ``serving.errors``, ``serving.model_repository`` (state names),
``serving.search_embeddings``, ``serving.search_versions`` and ``search``;
``serving.search_server`` composes it.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from typing import Sequence

import numpy as np

from core.names import CATALOGUE_DIR, SERVING_SIGNATURE
from search.catalogue import Catalogue, CatalogueItem
from search.index import (GalleryIndex, GalleryIndexError, ModelMismatchError, ModelStamp,
                          model_fingerprint, read_manifest)
from serving.errors import (FailedPrecondition, InvalidArgument, NotFound, RequestError,
                            Unavailable, as_request_error)
from serving.model_repository import State
from serving.search_embeddings import EmbeddingCache
from serving.search_versions import index_dir, pushed_versions, version_identity

log = logging.getLogger("cgd.serving.search")

# Codes with which the embedding server says it does not serve a version (yet, or any more).
_NOT_SERVED = ("NOT_FOUND", "UNAVAILABLE")


class Pair:
    """One version's model and index; ``seq``: the last catalogue op the index holds."""

    def __init__(self, version: int, path: str, index: GalleryIndex, seq: int):
        self.version, self.path, self.index, self.seq = version, path, index, seq


class SearchService:
    """Search, add and remove for one model, over the pair described in the module docstring.

    Args:
        base_path: the serving dir, holding ``<model_name>/<version>/`` (as ``cgd serve``'s).
        embedder: an ``EmbeddingServer`` (anything with ``embed(images, version)`` and
            ``dimension(version)``).
    """

    def __init__(self, base_path: str, model_name: str, embedder):
        self.model_name = model_name
        self.model_dir = os.path.join(os.path.abspath(base_path), model_name)
        self.embedder = embedder
        self.catalogue = Catalogue(os.path.join(self.model_dir, CATALOGUE_DIR))
        self.cache = EmbeddingCache(os.path.join(self.model_dir, CATALOGUE_DIR, "embeddings"))
        self._pair: Pair | None = None
        self._states: dict[int, tuple[int, str, str]] = {}
        self._refused: dict[int, tuple] = {}  # version -> identity of the files refused
        # (version, identity, index) loaded while the embedding server does not serve it yet.
        self._pending: tuple | None = None
        self._poll_lock = threading.Lock()
        self._edit_lock = threading.Lock()  # catalogue edits and the switch, one at a time

    # -- versions

    def poll(self) -> bool:
        """Switch to the newest complete version if its pair is ready; True if switched.

        Also brings the served index up to the catalogue (edits by other replicas).
        """
        with self._poll_lock:
            switched = self._switch_if_ready()
            current = self._pair
            if current is not None and not switched:
                with self._edit_lock:
                    self._catch_up(current)
            return switched

    def _switch_if_ready(self) -> bool:
        """Try the versions newer than the served one, newest first: the first that is not
        refused is switched to, or waited for (a refused newest must not hide a good one
        below it, e.g. at a start right after a bad push)."""
        versions = pushed_versions(self.model_dir)
        current = self._pair
        for version in sorted(versions, reverse=True):
            if current is not None and version <= current.version:
                break
            outcome = self._try(version, versions[version], current)
            if outcome != "refused":
                return outcome == "switched"
        return False

    def _try(self, version: int, path: str, current: Pair | None) -> str:
        """"switched", "waiting" (for the embedding server or a retry) or "refused"."""
        identity = version_identity(path)
        if self._refused.get(version) == identity:
            return "refused"
        pending = self._pending
        if pending is not None and pending[:2] == (version, identity):
            index = pending[2]
        else:
            try:
                index = self._load_index(path)
            except GalleryIndexError as e:
                return self._refuse(version, identity, e)
            self._pending = (version, identity, index)
        try:
            dimension = self.embedder.dimension(version)
        except RequestError as e:
            if e.code not in _NOT_SERVED:
                raise
            self._states[version] = (State.LOADING, "OK",
                                    f"waiting for the embedding server to serve version {version} "
                                    f"({e.message}); serving "
                                    f"{current.version if current else 'nothing'} meanwhile")
            return "waiting"
        if dimension is not None and dimension != index.dimension:
            return self._refuse(version, identity, ModelMismatchError(
                f"{index_dir(path)}: the index has dimension {index.dimension}, the model "
                f"{dimension} (its {SERVING_SIGNATURE} signature on the embedding server)"))
        self._pending = None
        pair = Pair(version, path, index, index.catalogue_seq)
        try:
            self._catch_up(pair)  # the bulk of the replay, outside the edit lock
            with self._edit_lock:
                self._catch_up(pair)  # what was added meanwhile
                self._pair = pair  # the switch: one reference assignment
        except RequestError as e:  # the embedding server went away mid-replay: try again later
            log.warning("search: replaying the catalogue onto version %d failed, will retry: %s",
                        version, e.message)
            return "waiting"
        self._states[version] = (State.AVAILABLE, "OK", "")
        if current is not None:  # its model may stay loaded; this service no longer asks for it
            self._states[current.version] = (State.END, "OK", "")
        log.info("search: serving version %d of model %s (%s index, %d images)", version,
                 self.model_name, index.kind, index.size)
        return "switched"

    def _refuse(self, version: int, identity: tuple, error: GalleryIndexError) -> str:
        current, self._pending = self._pair, None
        self._refused[version] = identity
        self._states[version] = (State.END, as_request_error(error).code,
                                 f"version {version} refused: {error}")
        log.error("search: version %d of model %s refused, still serving %s: %s", version,
                  self.model_name, current.version if current else "nothing", error)
        return "refused"

    def _load_index(self, path: str) -> GalleryIndex:
        """The version's index, checked against its own model's fingerprint (the embedding
        size is checked against the embedding server's signature after)."""
        directory = index_dir(path)
        fingerprint = model_fingerprint(path)
        dimension = int(read_manifest(directory)["dimension"])
        return GalleryIndex.load(directory, expect=ModelStamp(self.model_name, fingerprint,
                                                              dimension))

    def version_states(self) -> dict[int, tuple[int, str, str]]:
        """{version: (State, status code name, message)}; a refused version's message says why."""
        return dict(self._states)

    def model_status(self, model_name: str, version: int | None) -> list[tuple[int, int, str, str]]:
        """[(version, State, code name, message)], newest first, as ``GetModelStatus`` reports.

        UNAVAILABLE, with every version's reason, while no pair is served: the REST status is
        the readiness probe (serving/deploy/search.yaml), ready once the search can answer.
        """
        if model_name == self.model_name and version is None:
            self.pair(model_name)
        states = self.version_states() if model_name == self.model_name else {}
        if version is not None:
            states = {version: states[version]} if version in states else {}
        if not states:
            which = "any versions" if version is None else f"version {version}"
            raise NotFound(f"Could not find {which} of model {model_name} in the search service")
        return [(v, *states[v]) for v in sorted(states, reverse=True)]

    def gallery_size(self) -> int:
        pair = self._pair
        return pair.index.size if pair is not None else 0

    def served_version(self) -> int | None:
        pair = self._pair
        return pair.version if pair is not None else None

    def pair(self, model_name: str, version: int | None = None) -> Pair:
        if model_name != self.model_name:
            raise NotFound(f"Servable not found for request: "
                           f"{'Latest' if version is None else 'Specific'}({model_name})")
        pair = self._pair
        if pair is None:
            why = "; ".join(m for _, _, m in self._states.values() if m)
            raise Unavailable(f"model {self.model_name}: no version with a gallery index is served "
                              f"yet under {self.model_dir}{': ' + why if why else ''}")
        if version is not None and version != pair.version:
            raise NotFound(f"Servable not found for request: Specific({model_name}, {version}) "
                           f"(the search serves version {pair.version})")
        return pair

    # -- queries

    def search(self, model_name: str, version: int | None, k: int,
               images: Sequence[bytes] | None = None, embeddings: np.ndarray | None = None):
        """(version, [[search.index Hit]]) for images (embedded with that version) or embeddings."""
        if (images is None) == (embeddings is None):
            raise InvalidArgument("a search takes either images or embeddings, not both or neither")
        for attempt in (0, 1):
            pair = self.pair(model_name, version)
            size = pair.index.size
            if not 1 <= k <= size:
                raise InvalidArgument(f"k {k} is outside [1, {size}]: the gallery of version "
                                      f"{pair.version} holds {size} images")
            if embeddings is not None:
                queries = self._checked(pair, embeddings)
            else:
                try:
                    queries = self.embedder.embed(images, pair.version)
                except RequestError as e:
                    # The embedding server has moved on from this pair's version: switch, retry.
                    if e.code in _NOT_SERVED and attempt == 0 and version is None and self.poll():
                        continue
                    raise
            return pair.version, pair.index.search(queries, k)
        raise AssertionError("unreachable")

    def _checked(self, pair: Pair, embeddings) -> np.ndarray:
        array = np.asarray(embeddings, np.float32)
        dimension = pair.index.dimension
        if array.ndim != 2 or array.shape[0] == 0:
            raise InvalidArgument(f"embeddings must be float [N, D] with N >= 1, got shape "
                                  f"{list(array.shape)}")
        if array.shape[1] != dimension:
            raise InvalidArgument(f"the embeddings have dimension {array.shape[1]}, the index of "
                                  f"version {pair.version} has dimension {dimension} (model "
                                  f"{pair.index.model.fingerprint[:12]})")
        return array

    # -- the living catalogue

    def add(self, model_name: str, ids: Sequence[str], images: Sequence[bytes],
            metadata: Sequence[dict | None] | None = None) -> tuple[int, int]:
        """Adds images by id: (version whose index holds them, catalogue sequence number)."""
        ids = _checked_ids(ids)
        if len(images) != len(ids):
            raise InvalidArgument(f"{len(ids)} ids for {len(images)} images")
        metadata = list(metadata) if metadata is not None else [None] * len(ids)
        if len(metadata) != len(ids) or any(m is not None and not isinstance(m, dict)
                                            for m in metadata):
            raise InvalidArgument(f"metadata must be one JSON object (or null) per id: "
                                  f"{len(metadata)} for {len(ids)} ids")
        while True:
            pair = self.pair(model_name)
            vectors = self.embedder.embed(images, pair.version)
            with self._edit_lock:
                if self._pair is not pair:
                    continue  # switched while embedding: embed with the new version's model
                self._catch_up(pair)
                # DuplicateIdError (ALREADY_EXISTS) before anything is written.
                pair.index.add(ids, vectors, metadata)
                try:
                    seq = self.catalogue.add([CatalogueItem(i, b, m or {})
                                              for i, b, m in zip(ids, images, metadata)])
                except BaseException:
                    pair.index.remove(ids)
                    raise
                for image, vector in zip(images, vectors):
                    self.cache.put(pair.version, image, vector)
                self._catch_up(pair, own={("add", i) for i in ids})
                return pair.version, seq

    def remove(self, model_name: str, ids: Sequence[str]) -> tuple[int, int]:
        ids = _checked_ids(ids)
        with self._edit_lock:
            pair = self.pair(model_name)
            self._catch_up(pair)
            unknown = [i for i in ids if i not in pair.index]
            if unknown:
                raise NotFound(f"ids not in the gallery of version {pair.version}: "
                               f"{', '.join(unknown[:10])}")
            if len(ids) >= pair.index.size:
                raise FailedPrecondition(f"removing {len(ids)} ids would empty the gallery of "
                                         f"version {pair.version} ({pair.index.size} images)")
            # Checked first, so the journal never records a remove the index refuses.
            seq = self.catalogue.remove(ids)
            pair.index.remove(ids)
            self._catch_up(pair, own={("remove", i) for i in ids})
            return pair.version, seq

    def _catch_up(self, pair: Pair, own: set = frozenset()) -> None:
        """Apply the catalogue's ops after ``pair.seq`` to its index (``own``: already applied)."""
        ops = self.catalogue.ops_after(pair.seq)
        adds = [op for op in ops if op.kind == "add" and (op.kind, op.id) not in own]
        vectors = self._embed_ops(adds, pair.version)
        for op in ops:
            if (op.kind, op.id) not in own:
                try:
                    if op.kind == "add":
                        pair.index.add([op.id], vectors[op.seq, op.id][None, :], [op.metadata])
                    else:
                        pair.index.remove([op.id])
                except GalleryIndexError as e:  # e.g. the id is in the new push's gallery already
                    log.warning("search: catalogue op %d (%s %s) does not apply to version %d: %s",
                                op.seq, op.kind, op.id, pair.version, e)
            pair.seq = max(pair.seq, op.seq)

    def _embed_ops(self, adds, version: int) -> dict:
        images = {}
        for op in adds:
            path = op.image_path if os.path.isabs(op.image_path) else \
                os.path.join(self.catalogue.directory, op.image_path)
            with open(path, "rb") as f:
                images[op.seq, op.id] = f.read()
        vectors = {key: self.cache.get(version, image) for key, image in images.items()}
        missing = [key for key, vector in vectors.items() if vector is None]
        if missing:
            embedded = self.embedder.embed([images[key] for key in missing], version)
            for key, vector in zip(missing, embedded):
                vectors[key] = vector
                self.cache.put(version, images[key], vector)
        return vectors


def _checked_ids(ids) -> list[str]:
    ids = list(ids)
    if not ids or not all(isinstance(i, str) and i for i in ids):
        raise InvalidArgument(f"ids must be one or more non-empty strings: {ids[:5]}")
    repeated = sorted(i for i, n in collections.Counter(ids).items() if n > 1)
    if repeated:
        raise InvalidArgument(f"ids repeated within the request: {', '.join(repeated)}")
    return ids
