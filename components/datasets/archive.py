"""Images read straight out of an uncompressed tar archive: no file per image.

Extracting a dataset's ``.tgz`` into one file per image costs, per image, a file
creation (and later a deletion) that is as expensive as inflating the image itself
(16,185 files for Cars196). A source can instead inflate the archive once into a
``.tar`` in the work directory (``inflate_tgz``: one sequential write, zlib inflating
a megabyte at a time with the GIL released), list its members (``tar_members``: the
headers only) and give each record the image's place in it, ``member_path(tar,
offset, size)``. ``read_image`` reads a record's image, a plain file or such a member,
on whichever Beam worker processes it.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from typing import Iterator

# "tar:<path of the .tar>#<offset>+<size>": the bytes of one member.
MEMBER_SCHEME = "tar:"
CHUNK = 1 << 20


class ArchiveError(ValueError):
    """An archive does not inflate or list: "<file name>: <reason>"."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.reason = reason


def _gfile():
    # TensorFlow only for a remote path (gs://, s3://...): a Beam worker reading local
    # files does not pay for importing it.
    import tensorflow as tf
    return tf.io.gfile


def open_file(path: str, mode: str):
    """Local files through plain I/O (cheaper per call), remote ones through TensorFlow's
    file systems. Errors are OSErrors either way."""
    if "://" not in path:
        return open(path, mode)
    try:
        return _RemoteFile(_gfile().GFile(path, mode))
    except Exception as e:  # tf.errors.OpError
        raise OSError(f"{path}: {e}") from None


class _RemoteFile:
    """A GFile whose errors are OSErrors."""

    def __init__(self, gfile):
        self._gfile = gfile

    def __getattr__(self, name):
        attribute = getattr(self._gfile, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            try:
                return attribute(*args, **kwargs)
            except OSError:
                raise
            except Exception as e:  # tf.errors.OpError
                raise OSError(str(e)) from None
        return call

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def inflate_tgz(source: str, target: str) -> None:
    """Write the uncompressed tar of gzip'd ``source`` to ``target`` (atomically)."""
    name = os.path.basename(source)
    partial = target + ".partial"
    _makedirs(os.path.dirname(target))
    try:
        with open_file(source, "rb") as src, open_file(partial, "wb") as out:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            while True:
                data = src.read(CHUNK)
                if not data:
                    break
                out.write(inflater.decompress(data))
                while inflater.eof and inflater.unused_data:  # concatenated gzip members
                    rest = inflater.unused_data
                    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    out.write(inflater.decompress(rest))
            if not inflater.eof:
                raise ArchiveError(name, "the gzip stream is truncated")
            out.write(inflater.flush())
    except zlib.error as e:
        raise ArchiveError(name, f"not a gzip file ({e})") from None
    if "://" in target:
        _gfile().rename(partial, target, overwrite=True)
    else:
        os.replace(partial, target)


def _makedirs(path: str) -> None:
    if "://" in path:
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def tar_members(tar_path: str) -> Iterator[tuple[str, int, int]]:
    """(name, offset of the data, size) of every regular file in an uncompressed tar."""
    try:
        with open_file(tar_path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for member in tar:
                if member.isfile():
                    yield member.name, member.offset_data, member.size
    except tarfile.TarError as e:
        raise ArchiveError(os.path.basename(tar_path), f"not a tar archive ({e})") from None


def member_path(tar_path: str, offset: int, size: int) -> str:
    return f"{MEMBER_SCHEME}{tar_path}#{offset}+{size}"


def read_member(tar_path: str, offset: int, size: int) -> bytes:
    with open_file(tar_path, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise OSError(f"{tar_path}: {size} bytes expected at offset {offset}, got {len(data)}")
    return data


def read_image(path: str) -> bytes:
    """The bytes of a record's image: a file, or a ``member_path`` inside a tar."""
    if path.startswith(MEMBER_SCHEME):
        tar_path, place = path[len(MEMBER_SCHEME):].rsplit("#", 1)
        offset, size = place.split("+")
        return read_member(tar_path, int(offset), int(size))
    with open_file(path, "rb") as f:
        return f.read()
