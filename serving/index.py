"""Embedding a directory of images through a model server, for a gallery index.

``embed_paths`` embeds image files through an ``EmbeddingClient`` (``cgd embed``), skipping
and naming the ones the server cannot decode; ``build_gallery_index`` embeds a directory
into a ``search.index.GalleryIndex`` stamped with the served version's model fingerprint
(``cgd index build``), which the search service (``serving.search_service``) serves.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from typing import Callable, Sequence

import numpy as np

log = logging.getLogger("cgd.serving.index")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def find_images(root: str) -> list[str]:
    """Image files (JPEG/PNG by extension) under ``root``, recursively, sorted."""
    found = []
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                found.append(os.path.abspath(os.path.join(directory, name)))
    return found


@dataclasses.dataclass
class BuildReport:
    index: object                   # search.index.GalleryIndex
    skipped: list[tuple[str, str]]  # (path, reason)
    version_dir: str = ""           # build_gallery_index: the version whose model embedded


@dataclasses.dataclass
class EmbedReport:
    paths: list[str]                # the embedded files, in the order given
    embeddings: np.ndarray          # float32 [len(paths), D]
    skipped: list[tuple[str, str]]  # (path, reason): files the server could not decode
    model_version: int


def embed_paths(client, paths: Sequence[str], batch_size: int = 32, strict: bool = False,
                progress: Callable[[int, int], None] | None = None,
                where: str = "") -> EmbedReport:
    """Embed image files through ``client`` (an ``EmbeddingClient``), skipping bad ones.

    A batch the server rejects with INVALID_ARGUMENT is retried image by image,
    and images that still fail (corrupt files) are skipped, logged once each by
    name, and reported, or, with ``strict``, fail naming the file. ``cgd embed``
    and ``cgd index build`` both embed this way. ``where`` (" under DIR") goes in
    the error when no image could be embedded.
    """
    import grpc

    from serving.client import ServingError

    kept_paths, chunks, skipped, versions = [], [], [], set()

    def embed(batch_paths: Sequence[str], blobs: Sequence[bytes]):
        emb = client.embed_bytes(blobs)
        versions.add(client.last_model_version)
        kept_paths.extend(batch_paths)
        chunks.append(emb)

    for start in range(0, len(paths), batch_size):
        batch = list(paths[start:start + batch_size])
        blobs = []
        for p in batch:
            with open(p, "rb") as f:
                blobs.append(f.read())
        try:
            embed(batch, blobs)
        except ServingError as e:
            if e.code != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            for p, blob in zip(batch, blobs):
                try:
                    embed([p], [blob])
                except ServingError as e1:
                    if e1.code != grpc.StatusCode.INVALID_ARGUMENT:
                        raise
                    if strict:
                        raise ValueError(f"{p}: the server rejected the image: {e1.details}") from None
                    # The one report of this file (the caller gets the full reason in
                    # the report's skipped and should not log it again).
                    log.warning("skipped %s: %s", p, e1.details.splitlines()[0][:200])
                    skipped.append((p, e1.details))
        if progress:
            progress(min(start + batch_size, len(paths)), len(paths))
    if not chunks:
        raise ValueError(f"none of the {len(paths)} images{where} could be embedded")
    if len(versions) > 1:
        raise RuntimeError(f"the server switched model versions while embedding "
                           f"({sorted(versions)}); embeddings would not be comparable: run it again")
    return EmbedReport(kept_paths, np.concatenate(chunks), skipped, int(versions.pop() or 0))


def _embed_directory(client, image_dir: str, batch_size: int, strict: bool,
                     progress) -> EmbedReport:
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"image directory {image_dir} does not exist")
    paths = find_images(image_dir)
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {image_dir}")
    return embed_paths(client, paths, batch_size, strict, progress, where=f" under {image_dir}")


def build_gallery_index(client, image_dir: str, model_base_path: str, config,
                        batch_size: int = 32, strict: bool = False,
                        progress: Callable[[int, int], None] | None = None) -> BuildReport:
    """A ``search.index.GalleryIndex`` of every image under ``image_dir``, embedded by the
    served model and stamped with its version's fingerprint.

    Ids are the paths relative to ``image_dir``; metadata ``{"path", "class"}`` (the class
    is the first sub-folder, "" for images at the top). ``model_base_path`` holds
    ``<model>/<version>/`` as the server reads it: the answering version's
    ``saved_model.pb`` is fingerprinted there. ``config``: the ``gallery_index`` section.
    """
    from search.index import GalleryIndex, ModelStamp, model_fingerprint

    report = _embed_directory(client, image_dir, batch_size, strict, progress)
    version_dir = os.path.join(os.path.abspath(model_base_path), client.model_name,
                               str(report.model_version))
    if not os.path.isfile(os.path.join(version_dir, "saved_model.pb")):
        raise FileNotFoundError(
            f"the server embedded with version {report.model_version} of model "
            f"{client.model_name}, but {version_dir}/saved_model.pb does not exist: pass the "
            f"directory the server reads as --model-base-path")
    root = os.path.abspath(image_dir)
    ids = [os.path.relpath(p, root) for p in report.paths]
    metadata = [{"path": p, "class": i.split(os.sep)[0] if os.sep in i else ""}
                for p, i in zip(report.paths, ids)]
    stamp = ModelStamp(client.model_name, model_fingerprint(version_dir),
                       int(report.embeddings.shape[1]), str(report.model_version))
    index = GalleryIndex.build(report.embeddings, ids, metadata, config, stamp)
    return BuildReport(index, report.skipped, version_dir)


def progress_printer(label: str, stream=None, delay_s: float = 2.0,
                     clock: Callable[[], float] = time.monotonic) -> Callable[[int, int], None]:
    """A one-line progress display (carriage return on a terminal, lines otherwise).

    Silent for a job that finishes within ``delay_s`` seconds (its caller's summary line
    says it all); after that, a line at most every 0.2 s on a terminal, every 5 s otherwise,
    and the final count once something has been shown. ``stream`` defaults to the
    ``sys.stderr`` of the moment of the call.
    """
    stream = stream if stream is not None else sys.stderr
    start = clock()
    tty = stream.isatty()
    interval = 0.2 if tty else 5.0
    last = [None]  # when the last line was shown; None: nothing shown yet

    def show(done: int, total: int) -> None:
        now = clock()
        if last[0] is None:
            if done >= total or now - start < delay_s:
                return
        elif done < total and now - last[0] < interval:
            return
        last[0] = now
        rate = done / max(now - start, 1e-9)
        line = f"{label}: {done}/{total} images ({rate:.1f}/s)"
        if tty:
            stream.write("\r" + line + ("\n" if done >= total else ""))
        else:
            stream.write(line + "\n")
        stream.flush()

    return show
