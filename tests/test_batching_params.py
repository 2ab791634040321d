"""BatchingParameters files: TF Serving's defaults, wrapper-typed fields, and its validation messages.

Reference: TF Serving's batching_session.cc and batching_parameters in session_bundle_config.proto.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modelserve.errors import InvalidArgument
from modelserve.execution.batching import params


def test_an_empty_file_gives_tf_servings_defaults() -> None:
    p = params.parse("")
    assert (p.max_batch_size, p.batch_timeout_micros, p.max_enqueued_batches) == (1000, 0, 10)
    assert p.num_batch_threads >= 1 and p.thread_pool_name == "batch_threads"
    assert p.allowed_batch_sizes == () and not p.pad_variable_length_inputs
    assert not p.enable_large_batch_splitting and p.execution_batch_size == 1000
    assert (p.priority_levels, p.default_priority_level, p.queue_timeout) == (0, 1, None)


def test_the_documented_example_file_parses(tmp_path: Path) -> None:
    path = tmp_path / "batching.txt"
    path.write_text(
        "max_batch_size { value: 128 }\n"
        "batch_timeout_micros { value: 0 }\n"
        "max_enqueued_batches { value: 1000000 }\n"
        "num_batch_threads { value: 8 }\n"
        "allowed_batch_sizes: 32\nallowed_batch_sizes: 128\n"
        "pad_variable_length_inputs: true\n"
        'thread_pool_name { value: "pool" }\n'
    )
    p = params.read_file(str(path))
    assert (p.max_batch_size, p.max_enqueued_batches, p.num_batch_threads) == (128, 1_000_000, 8)
    assert p.allowed_batch_sizes == (32, 128) and p.pad_variable_length_inputs
    assert p.thread_pool_name == "pool"
    assert p.padded_size(1) == 32 and p.padded_size(33) == 128


def test_splitting_defaults_max_execution_batch_size_to_max_batch_size() -> None:
    p = params.parse("max_batch_size { value: 64 } enable_large_batch_splitting { value: true }")
    assert p.execution_batch_size == 64
    q = params.parse(
        "max_batch_size { value: 64 } enable_large_batch_splitting { value: true } "
        "max_execution_batch_size { value: 16 } allowed_batch_sizes: 8 allowed_batch_sizes: 16"
    )
    assert (q.max_batch_size, q.execution_batch_size, q.max_enqueued_rows) == (64, 16, 160)


def test_modelserves_own_fields() -> None:
    p = params.parse(
        "priority_levels { value: 3 } default_priority_level { value: 2 } queue_timeout_micros { value: 2500 }"
    )
    assert (p.priority_levels, p.default_priority_level, p.queue_timeout) == (3, 2, 0.0025)


def test_zero_enqueued_batches_means_one_without_splitting_as_in_tf() -> None:
    assert params.parse("max_enqueued_batches { value: 0 }").max_enqueued_batches == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("num_batch_threads { value: 0 }", "num_batch_threads must be positive; was 0"),
        ("max_batch_size { value: 0 }", "input_batch_size_limit must be positive; was 0"),
        ("batch_timeout_micros { value: -1 }", "batch_timeout_micros must be non-negative; was -1"),
        (
            "max_enqueued_batches { value: 0 } enable_large_batch_splitting { value: true }",
            "max_enqueued_batches must be positive; was 0",
        ),
        (
            "max_batch_size { value: 16 } allowed_batch_sizes: 4 allowed_batch_sizes: 8",
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 8; expected 16",
        ),
        (
            "allowed_batch_sizes: 8",
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 8; expected 1000",
        ),
        (
            "max_batch_size { value: 8 } allowed_batch_sizes: [4, 2, 8]",
            "allowed_batch_sizes entries must be monotonically increasing",
        ),
        (
            "max_batch_size { value: 32 } enable_large_batch_splitting { value: true } "
            "max_execution_batch_size { value: 16 } allowed_batch_sizes: 8 allowed_batch_sizes: 32",
            "Last entry in allowed_batch_sizes must be equal to max_execution_batch_size; "
            "last entry was 32; expected 16",
        ),
        (
            "max_batch_size { value: 8 } enable_large_batch_splitting { value: true } "
            "max_execution_batch_size { value: 16 }",
            "When enable_large_batch_splitting is true, input_batch_size_limit must be greater than or "
            "equal to max_execution_batch_size.",
        ),
        (
            "priority_levels { value: 2 } default_priority_level { value: 3 }",
            "default_priority_level must be between 1 and priority_levels (2); was 3",
        ),
        ("queue_timeout_micros { value: -5 }", "queue_timeout_micros must be non-negative; was -5"),
    ],
)
def test_tf_servings_validation_messages(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        params.parse(text)
    assert caught.value.message == message


def test_a_malformed_file_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "b.txt"
    path.write_text("max_batch_size: 3\n")  # not the wrapper form
    with pytest.raises(InvalidArgument, match=r"Invalid protobuf file: '.*b\.txt': line 1"):
        params.read_file(str(path))


def test_per_model_files_keep_the_servers_thread_pool() -> None:
    shared = params.parse('num_batch_threads { value: 3 } thread_pool_name { value: "shared" }')
    own = params.parse("num_batch_threads { value: 9 } max_batch_size { value: 4 }")
    mixed = params.with_pool(own, shared)
    assert (mixed.num_batch_threads, mixed.thread_pool_name, mixed.max_batch_size) == (3, "shared", 4)


# ---- a request's own priority and queue timeout (HTTP headers, gRPC metadata) -------------------


def test_request_options_come_from_headers_or_metadata() -> None:
    from modelserve.execution.request_options import DEFAULT, RequestOptions, from_headers

    assert from_headers([(b"content-type", b"application/json")]) is DEFAULT
    assert from_headers([(b"X-ModelServe-Priority", b"2"), (b"x-modelserve-queue-timeout-ms", b"2.5")]) == (
        RequestOptions(priority=2, queue_timeout=0.0025)
    )
    assert from_headers((("x-modelserve-queue-timeout-ms", "0"),)) == RequestOptions(0, 0.0)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-modelserve-priority", "high"),
        ("x-modelserve-priority", "-1"),
        ("x-modelserve-queue-timeout-ms", "-3"),
        ("x-modelserve-queue-timeout-ms", "nan"),
    ],
)
def test_malformed_request_options_are_invalid_arguments(header: str, value: str) -> None:
    from modelserve.execution.request_options import from_headers

    with pytest.raises(InvalidArgument, match=header):
        from_headers([(header, value)])
