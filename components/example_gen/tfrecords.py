"""Gzip TFRecord files written by Beam at a chosen compression level (no TFX imports).

TFX's components read and write gzip TFRecords (``*.gz``). Beam's ``WriteToTFRecord``
always compresses at zlib's default level 6 and computes the record checksums with
crcmod; for payloads that are already compressed (JPEG bytes: 1.05x at level 6) or raw
pixels (level 1 compresses nearly as well as 6 at half the CPU), that is most of the
cost of writing. ``WriteGzipTFRecords`` writes the same format, readable by every
TFRecord reader with GZIP compression (``tf.data``, TFXIO, Beam), at the level asked
for; 0 stores the data in deflate's uncompressed blocks.

Each Beam bundle writes its own file (no shuffle or grouping of the data: nothing but
file names goes back to the runner), renamed into place by Beam's file-sink
finalisation once the pipeline succeeded.
"""

from __future__ import annotations

import gzip
import struct

import apache_beam as beam
from apache_beam import coders
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import CompressionTypes

try:  # C implementation (a dependency of the Google Cloud clients Beam[gcp] installs)
    from google_crc32c import value as _crc32c
except ImportError:  # pragma: no cover: crcmod, as Beam's own writer
    from apache_beam.io.tfrecordio import _default_crc32c_fn as _crc32c

# What our writers use: JPEG bytes do not compress; raw pixels at level 1.
STORED = 0
FAST = 1


def _masked_crc(data: bytes) -> bytes:
    crc = _crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def frame(record: bytes) -> bytes:
    """One TFRecord: length, its masked CRC-32C, the data, its masked CRC-32C."""
    length = struct.pack("<Q", len(record))
    return b"".join((length, _masked_crc(length), record, _masked_crc(record)))


class _GzipHandle:
    """A gzip stream over the sink's file; closing it closes both."""

    def __init__(self, raw, level: int):
        self._raw = raw
        self._gzip = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=level, mtime=0)

    def write(self, data: bytes) -> None:
        self._gzip.write(data)

    def close(self) -> None:
        self._gzip.close()
        self._raw.close()


class _GzipTFRecordSink(filebasedsink.FileBasedSink):
    def __init__(self, file_path_prefix: str, compression_level: int):
        super().__init__(file_path_prefix, coder=coders.BytesCoder(), file_name_suffix=".gz",
                         num_shards=0, shard_name_template=None,
                         mime_type="application/octet-stream",
                         compression_type=CompressionTypes.UNCOMPRESSED)
        self._level = int(compression_level)

    def open(self, temp_path):
        return _GzipHandle(super().open(temp_path), self._level)

    def write_encoded_record(self, file_handle, encoded_value):
        file_handle.write(frame(encoded_value))


class WriteGzipTFRecords(beam.PTransform):
    """Serialized records -> ``<file_path_prefix>-SSSSS-of-NNNNN.gz``, one file per bundle,
    gzip at ``compression_level`` (0-9)."""

    def __init__(self, file_path_prefix: str, compression_level: int = STORED):
        super().__init__()
        if not 0 <= compression_level <= 9:
            raise ValueError(f"compression_level must be 0-9, got {compression_level}")
        self._sink = _GzipTFRecordSink(file_path_prefix, compression_level)

    def expand(self, records):
        return records | beam.io.Write(self._sink)
