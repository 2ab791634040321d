"""TFRecord files, read and written without TensorFlow.

The format (TF's ``core/lib/io/record_writer.cc``) is a sequence of records::

    uint64 length          little-endian
    uint32 masked_crc32c(length bytes)
    byte   data[length]
    uint32 masked_crc32c(data)

``masked_crc32c(x) = rotate_right(crc32c(x), 15) + 0xa282ead8`` (mod 2**32).
Only uncompressed files are read, as TF Serving's warm-up reader does. Errors
follow TF's ``RecordReader``: a bad checksum or a record cut short is
DATA_LOSS (``corrupted record at <offset>`` / ``truncated record at <offset>``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO

import google_crc32c

from ..errors import DataLoss

_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")


def masked_crc32c(data: bytes) -> int:
    crc = int(google_crc32c.value(data))
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def read_records(stream: BinaryIO) -> Iterator[bytes]:
    """Each record's payload, checksums verified; DataLoss at the first damaged record."""
    offset = 0
    while True:
        header = stream.read(_HEADER.size)
        if not header:
            return
        if len(header) < _HEADER.size:
            raise DataLoss(f"truncated record at {offset}")
        length, length_crc = _HEADER.unpack(header)
        if masked_crc32c(header[:8]) != length_crc:
            raise DataLoss(f"corrupted record at {offset}")
        data = stream.read(length)
        footer = stream.read(_FOOTER.size)
        if len(data) < length or len(footer) < _FOOTER.size:
            raise DataLoss(f"truncated record at {offset}")
        if masked_crc32c(data) != _FOOTER.unpack(footer)[0]:
            raise DataLoss(f"corrupted record at {offset}")
        offset += _HEADER.size + length + _FOOTER.size
        yield data


def encode_record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + _FOOTER.pack(masked_crc32c(length)) + data + _FOOTER.pack(masked_crc32c(data))


def write_records(stream: BinaryIO, records: Iterable[bytes]) -> None:
    """Write ``records`` as TFRecords (what ``tf.io.TFRecordWriter`` writes, uncompressed)."""
    for data in records:
        stream.write(encode_record(data))
