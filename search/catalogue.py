"""The living catalogue: gallery additions and removals by id between pushes.

Lives in ``<serving_dir>/<model_name>/catalogue/`` (``core.names.CATALOGUE_DIR``), outside
the version directories, so that it survives pushes and restarts. Layout:

    journal.jsonl          one JSON object per line, one line per op:
                           {"seq": 1, "kind": "add", "id": ..., "image": "images/ab/<sha256>",
                            "metadata": {...}, "time": ...} or {"seq", "kind": "remove", "id"}
    images/<2>/<sha256>    an added image's bytes, named by their sha256

Durability: an image is written to a temp file, fsynced and moved into place (content
addressed, so a retry or two equal images are one file) BEFORE the journal line that
names it; the line is written whole with one write and fsynced before ``add`` returns. A
crash mid-append leaves a torn last line (no newline, or not JSON): readers ignore it
and log it, and the next writer cuts it off, so it is never half-applied. A bad line
anywhere else is corruption (CatalogueError naming the file and line).

Concurrency: a lock between threads of one process, ``fcntl.flock`` on the journal
between processes (exclusive to append, shared to read). Each instance reads only the
lines appended since it last looked.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from typing import Optional, Sequence

from search.index import DuplicateIdError, GalleryIndexError, UnknownIdError

log = logging.getLogger("cgd.search.catalogue")

JOURNAL = "journal.jsonl"
IMAGES_DIR = "images"


class CatalogueError(GalleryIndexError):
    """The journal is corrupt before its last line, or an op is malformed (names it)."""


@dataclasses.dataclass(frozen=True)
class CatalogueItem:
    id: str
    image_bytes: Optional[bytes] = None
    metadata: Optional[dict] = None
    image_path: str = ""  # where the catalogue stored the image (set by current_items)


@dataclasses.dataclass(frozen=True)
class Op:
    seq: int
    kind: str          # "add" | "remove"
    id: str
    image_path: str    # absolute path of the stored image ("" for a remove)
    metadata: dict


class Catalogue:
    """Additions and removals by id, journaled (see the module docstring)."""

    def __init__(self, directory: str):
        self.directory = os.path.abspath(directory)
        os.makedirs(os.path.join(self.directory, IMAGES_DIR), exist_ok=True)
        self.journal_path = os.path.join(self.directory, JOURNAL)
        with open(self.journal_path, "ab"):
            pass
        self._lock = threading.Lock()
        self._ops: list[Op] = []
        self._offset = 0          # bytes of whole lines read so far
        self._line_no = 0
        self._items: dict[str, Op] = {}   # current adds, in add order
        self._removed: set[str] = set()   # ids whose last op is a remove
        self._torn_reported = -1
        with self._lock, self._flocked(fcntl.LOCK_SH) as f:
            self._read_new(f)

    # ------------------------------------------------------------------ writes

    def add(self, items: Sequence[CatalogueItem]) -> int:
        """Journal one add per item; returns the last op's sequence number.

        Refused whole (DuplicateIdError naming them) if an id is in the catalogue already
        (the search service also refuses ids of its index)."""
        items = list(items)
        if not items:
            raise CatalogueError("add needs at least one item")
        for item in items:
            if not isinstance(item.id, str) or not item.id:
                raise CatalogueError(f"catalogue ids must be non-empty strings, got {item.id!r}")
            if not isinstance(item.image_bytes, (bytes, bytearray)) or not item.image_bytes:
                raise CatalogueError(f"item {item.id!r} has no image bytes")
            if item.metadata is not None and not isinstance(item.metadata, dict):
                raise CatalogueError(f"item {item.id!r}: metadata must be a dict")
        ids = [item.id for item in items]
        if len(set(ids)) != len(ids):
            raise DuplicateIdError(f"ids given twice in one add: "
                                   f"{sorted({i for i in ids if ids.count(i) > 1})}")
        stored = [self._store_image(bytes(item.image_bytes)) for item in items]
        with self._lock, self._flocked(fcntl.LOCK_EX) as f:
            self._read_new(f)
            existing = [i for i in ids if i in self._items]
            if existing:
                raise DuplicateIdError(f"ids already in the catalogue "
                                       f"{self.directory}: {existing}")
            records = [{"seq": self.last_seq + n + 1, "kind": "add", "id": item.id,
                        "image": rel, "metadata": item.metadata or {}, "time": time.time()}
                       for n, (item, rel) in enumerate(zip(items, stored))]
            self._append(f, records)
            return records[-1]["seq"]

    def remove(self, ids: Sequence[str]) -> int:
        """Journal one remove per id; returns the last op's sequence number.

        Any id may be removed (it may be in the pushed gallery rather than here), but not
        one already removed (UnknownIdError naming it)."""
        ids = list(ids)
        if not ids:
            raise CatalogueError("remove needs at least one id")
        if len(set(ids)) != len(ids):
            raise UnknownIdError(f"ids given twice in one remove: "
                                 f"{sorted({i for i in ids if ids.count(i) > 1})}")
        with self._lock, self._flocked(fcntl.LOCK_EX) as f:
            self._read_new(f)
            gone = [i for i in ids if i in self._removed]
            if gone:
                raise UnknownIdError(f"ids already removed in the catalogue "
                                     f"{self.directory}: {gone}")
            records = [{"seq": self.last_seq + n + 1, "kind": "remove", "id": i,
                        "time": time.time()} for n, i in enumerate(ids)]
            self._append(f, records)
            return records[-1]["seq"]

    # ------------------------------------------------------------------- reads

    def ops_after(self, seq: int) -> list[Op]:
        """Every op with a sequence number above ``seq``, in order."""
        with self._lock, self._flocked(fcntl.LOCK_SH) as f:
            self._read_new(f)
            return [op for op in self._ops if op.seq > seq]

    def current_items(self, read_images: bool = True) -> dict[str, CatalogueItem]:
        """Every added id not removed since, in add order (what the next push folds into
        its gallery); with the image bytes unless ``read_images`` is False."""
        with self._lock, self._flocked(fcntl.LOCK_SH) as f:
            self._read_new(f)
            ops = list(self._items.values())
        out = {}
        for op in ops:
            data = None
            if read_images:
                with open(op.image_path, "rb") as img:
                    data = img.read()
            out[op.id] = CatalogueItem(op.id, data, dict(op.metadata), op.image_path)
        return out

    def removed_ids(self) -> set[str]:
        """Ids whose last op is a remove: the next push leaves them out of its gallery
        (they may belong to the configured gallery rather than to additions)."""
        with self._lock, self._flocked(fcntl.LOCK_SH) as f:
            self._read_new(f)
            return set(self._removed)

    @property
    def last_seq(self) -> int:
        """The sequence number of the last whole op read (0: none)."""
        return self._ops[-1].seq if self._ops else 0

    # ----------------------------------------------------------------- helpers

    def _flocked(self, mode: int):
        return _Flock(self.journal_path, mode)

    def _store_image(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        rel = os.path.join(IMAGES_DIR, digest[:2], digest)
        path = os.path.join(self.directory, rel)
        if os.path.isfile(path) and os.path.getsize(path) == len(data):
            return rel
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return rel

    def _append(self, f, records: list[dict]) -> None:
        """Append whole lines (exclusive flock held, state up to date)."""
        size = os.fstat(f.fileno()).st_size
        if size > self._offset:
            # A torn tail a killed writer left: never acknowledged, so cut it off rather
            # than let the next line be glued to it.
            log.warning("%s: dropping a torn last line (%d bytes) before appending",
                        self.journal_path, size - self._offset)
            os.ftruncate(f.fileno(), self._offset)
        data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
        os.lseek(f.fileno(), self._offset, os.SEEK_SET)
        written = 0
        while written < len(data):
            written += os.write(f.fileno(), data[written:])
        os.fsync(f.fileno())
        self._read_new(f)

    def _read_new(self, f) -> None:
        """Apply the whole lines appended since the last read (flock held)."""
        os.lseek(f.fileno(), self._offset, os.SEEK_SET)
        chunks = []
        while True:
            chunk = os.read(f.fileno(), 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        if not data:
            return
        lines = data.split(b"\n")
        tail = lines.pop()  # b"" when the data ends with a newline
        for n, line in enumerate(lines):
            last = n == len(lines) - 1 and not tail
            try:
                op = self._parse(json.loads(line))
            except (ValueError, KeyError, TypeError) as e:
                if last:
                    # A whole line that is not JSON at the end: treat as torn too.
                    self._report_torn(len(line) + 1)
                    return
                raise CatalogueError(f"{self.journal_path}: line {self._line_no + 1} is corrupt "
                                     f"({e!r}); later ops depend on it") from None
            self._apply(op)
            self._offset += len(line) + 1
            self._line_no += 1
        if tail:
            self._report_torn(len(tail))

    def _report_torn(self, nbytes: int) -> None:
        if self._torn_reported != self._offset:
            log.warning("%s: ignoring a torn last line (%d bytes at offset %d): an op "
                        "whose writer died before it finished", self.journal_path, nbytes,
                        self._offset)
            self._torn_reported = self._offset

    def _parse(self, record: dict) -> Op:
        kind = record["kind"]
        if kind not in ("add", "remove"):
            raise ValueError(f"unknown op kind {kind!r}")
        seq = int(record["seq"])
        if seq != self.last_seq + 1:
            raise ValueError(f"sequence number {seq} after {self.last_seq}")
        image = os.path.join(self.directory, record["image"]) if kind == "add" else ""
        return Op(seq, kind, str(record["id"]), image, dict(record.get("metadata") or {}))

    def _apply(self, op: Op) -> None:
        self._ops.append(op)
        if op.kind == "add":
            self._items[op.id] = op
            self._removed.discard(op.id)
        else:
            self._items.pop(op.id, None)
            self._removed.add(op.id)


class _Flock:
    """The journal opened read-write with an flock held for the block."""

    def __init__(self, path: str, mode: int):
        self.path, self.mode = path, mode

    def __enter__(self):
        self.f = open(self.path, "r+b")
        fcntl.flock(self.f.fileno(), self.mode)
        return self.f

    def __exit__(self, *exc):
        try:
            fcntl.flock(self.f.fileno(), fcntl.LOCK_UN)
        finally:
            self.f.close()
