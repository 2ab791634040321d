"""TFRecord reading and writing: the record framing, masked CRC32C, damage detection, TF's own files."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from modelserve.codecs.tfrecord import encode_record, masked_crc32c, read_records, write_records
from modelserve.errors import DataLoss


def test_masked_crc_of_known_values() -> None:
    # crc32c("123456789") = 0xE3069283 (RFC 3720); masked = rotr15 + 0xa282ead8
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == ((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)
    assert masked_crc32c(b"") == 0xA282EAD8  # crc32c("") = 0


def test_round_trip() -> None:
    records = [b"", b"a", b"x" * 100_000, bytes(range(256))]
    buffer = io.BytesIO()
    write_records(buffer, records)
    assert len(buffer.getvalue()) == sum(16 + len(r) for r in records)
    buffer.seek(0)
    assert list(read_records(buffer)) == records


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:5], "truncated record at 0"),  # header cut short
        (lambda b: b[:-2], "truncated record at 0"),  # footer cut short
        (lambda b: b[:12] + b"X" + b[13:], "corrupted record at 0"),  # payload changed
        (lambda b: b"\x09" + b[1:], "corrupted record at 0"),  # length changed
    ],
)
def test_damage_is_data_loss(damage: object, message: str) -> None:
    blob = damage(encode_record(b"hello"))  # type: ignore[operator]
    with pytest.raises(DataLoss, match=f"^{message}$"):
        list(read_records(io.BytesIO(blob)))


def test_second_record_damage_names_its_offset() -> None:
    blob = encode_record(b"ok") + encode_record(b"bad")[:-1]
    with pytest.raises(DataLoss, match=r"^truncated record at 18$"):
        list(read_records(io.BytesIO(blob)))


@pytest.mark.tensorflow
def test_agrees_with_tensorflow(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    records = [b"first", b"", b"z" * 5000]
    theirs = tmp_path / "tf.tfrecord"
    with tf.io.TFRecordWriter(str(theirs)) as writer:
        for record in records:
            writer.write(record)
    ours = io.BytesIO()
    write_records(ours, records)
    assert theirs.read_bytes() == ours.getvalue()
    mine = tmp_path / "ours.tfrecord"
    mine.write_bytes(ours.getvalue())
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(mine))] == records
