"""TFDS's download manager, stood in for by local ``.tgz`` files: inflated once, idempotently.

Shared by the datasets whose archives are gzip'd tars (cars196, cub200); SOP's zip has its
own (``sop/source.py``'s ``_LocalZip``).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import time

import tensorflow as tf

from components.datasets import archive
from components.datasets.records import DatasetSourceError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class LocalFiles:
    """Stands in for TFDS's DownloadManager: 'downloads' are the local files.

    A ``.tgz`` is inflated once into a ``.tar`` in ``extract_dir`` (``archive.inflate_tgz``).
    Its images stay inside (``images_in_archive``: each image's path is an
    ``archive.member_path``, read by ``archive.read_image``) or are written out as files;
    its other members (the devkit's ``.mat`` files) are always written out, for TFDS to read.
    """

    def __init__(self, files: dict[str, str], extract_dir: str, images_in_archive: bool,
                 error: type[DatasetSourceError] = DatasetSourceError):
        self._files = files
        self._error = error  # the caller's: tests and logs name the dataset's error type
        self._extract_dir = extract_dir
        self._images_in_archive = images_in_archive
        self._inflating: dict[str, concurrent.futures.Future] = {}  # target dir -> its job
        self.images: dict[str, dict[str, str]] = {}  # directory -> {file name: image path}
        self.member_names: dict[str, str] = {}       # image path -> archive member name

    def download_and_extract(self, url_or_urls):
        """The local paths at once; the archives are inflated in the background, one thread
        each (zlib releases the GIL), while TFDS parses the annotations: whoever needs an
        archive's files waits for it (``wait``)."""
        urls = tf.nest.flatten(url_or_urls)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(urls))
        paths = []
        for url in urls:
            path = self._files[os.path.basename(url)]
            if path.endswith(".tgz"):
                target = os.path.join(self._extract_dir, os.path.basename(path)[: -len(".tgz")])
                self._inflating[target] = pool.submit(self._extract, path, target)
                path = target
            paths.append(path)
        pool.shutdown(wait=False)
        return tf.nest.pack_sequence_as(url_or_urls, paths)

    def wait(self, path: str) -> None:
        """Returns once the archive ``path`` lies in (if any) is inflated; raises its error."""
        path = os.path.normpath(path)
        for target, job in self._inflating.items():
            if path == target or path.startswith(target + os.sep):
                job.result()

    def _extract(self, path: str, target: str) -> None:
        tar_path, done = target + ".tar", target + ".done"
        # Written last, after the members kept as files: a rerun rewrites none of them.
        files_done = target + ".files.done"
        files_written = tf.io.gfile.exists(files_done)
        try:
            if not tf.io.gfile.exists(done):  # idempotent across retries
                log.info("inflating %s to %s", path, tar_path)
                start = time.monotonic()
                archive.inflate_tgz(path, tar_path)
                with tf.io.gfile.GFile(done, "w") as f:
                    f.write("ok")
                log.info("inflated %s in %.1f s", os.path.basename(path), time.monotonic() - start)
            members = list(archive.tar_members(tar_path))
        except archive.ArchiveError as e:
            raise self._error(str(e)) from e  # the cause: for callers naming it their way
        images, names, made = {}, {}, set()
        for name, offset, size in members:
            # Never write outside target, whatever names the archive holds.
            local = os.path.normpath(os.path.join(target, name))
            if not local.startswith(os.path.normpath(target) + os.sep):
                raise self._error(f"archive member {name!r} escapes the extraction dir")
            is_image = name.lower().endswith(IMAGE_SUFFIXES)
            if is_image and self._images_in_archive:
                image_path = archive.member_path(tar_path, offset, size)
            else:
                if not files_written:
                    directory = os.path.dirname(local)
                    if directory not in made:
                        tf.io.gfile.makedirs(directory)
                        made.add(directory)
                    with tf.io.gfile.GFile(local, "wb") as out:
                        out.write(archive.read_member(tar_path, offset, size))
                image_path = local
            if is_image:
                images.setdefault(os.path.dirname(local), {})[os.path.basename(local)] = image_path
                names[image_path] = name
        if not files_written:
            with tf.io.gfile.GFile(files_done, "w") as f:
                f.write("ok")
        # One key per archive: safe from the other threads.
        self.images.update(images)
        self.member_names.update(names)
