"""Every command-line flag: TF Serving's 48 (same names, types and defaults) plus ours.

``FLAGS`` is the one table the parser, ``--help`` and the docs read. A flag
marked ``effect=False`` is accepted for compatibility and produces one
warning line saying it has no effect yet.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["int", "float", "bool", "str"]


@dataclass(frozen=True)
class Flag:
    name: str
    kind: Kind
    default: Any
    group: str
    help: str
    effect: bool = True  # False: accepted, warned about, ignored
    tf: bool = True  # one of tensorflow_model_server's own flags


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


GROUPS = ("Models", "gRPC", "REST", "Lifecycle", "Batching", "Runtime", "Monitoring", "Other")

FLAGS: tuple[Flag, ...] = (
    # Models
    Flag(
        "model_name",
        "str",
        "default",
        "Models",
        "Name of the single model to serve (ignored with --model_config_file).",
    ),
    Flag(
        "model_base_path",
        "str",
        "",
        "Models",
        "Base path of the single model: the folder holding numeric version folders.",
    ),
    Flag("model_config_file", "str", "", "Models", "Text-format ModelServerConfig listing the models to serve."),
    Flag(
        "model_config_file_poll_wait_seconds",
        "int",
        0,
        "Models",
        "Re-read --model_config_file every N seconds (0: read once).",
    ),
    Flag(
        "file_system_poll_wait_seconds",
        "int",
        1,
        "Models",
        "Scan base paths for new versions every N seconds (0 or less: only when a config is applied).",
    ),
    Flag(
        "allow_version_labels_for_unavailable_models",
        "bool",
        False,
        "Models",
        "Allow a new label to point at a version that is not yet AVAILABLE.",
    ),
    Flag(
        "flush_filesystem_caches",
        "bool",
        True,
        "Models",
        "TF Serving frees file-system caches after loads; no equivalent here.",
        effect=False,
    ),
    # gRPC
    Flag("port", "int", 8500, "gRPC", "gRPC port (0: no TCP gRPC; -1: any free port, logged)."),
    Flag("grpc_socket_path", "str", "", "gRPC", "Also serve gRPC on this UNIX domain socket."),
    Flag("grpc_channel_arguments", "str", "", "gRPC", "Comma-separated key=value gRPC server channel arguments."),
    Flag(
        "grpc_max_threads",
        "int",
        4 * _cpus(),
        "gRPC",
        "TF Serving's gRPC thread pool size; gRPC here runs on the event loop, its calls sharing --num_inference_threads.",
        effect=False,
    ),
    Flag("enable_grpc_healthcheck_service", "bool", False, "gRPC", "Serve the standard grpc.health.v1.Health service."),
    Flag("ssl_config_file", "str", "", "gRPC", "Text-format SSLConfig: TLS (and mTLS) for gRPC."),
    Flag("use_alts_credentials", "bool", False, "gRPC", "Google ALTS credentials; not supported here.", effect=False),
    Flag("enable_profiler", "bool", True, "gRPC", "TF profiler service; not provided.", effect=False),
    Flag(
        "enable_serialization_as_tensor_content",
        "bool",
        False,
        "gRPC",
        "Predict responses carry tensor bytes in tensor_content.",
    ),
    # REST
    Flag(
        "rest_api_port",
        "int",
        8501,
        "REST",
        "HTTP/REST port (0: no REST; -1: any free port, logged). TF Serving's own default is 0; its Docker image uses 8501.",
    ),
    Flag(
        "rest_api_num_threads",
        "int",
        4 * _cpus(),
        "REST",
        "TF Serving's REST thread pool size; requests here share --num_inference_threads.",
        effect=False,
    ),
    Flag(
        "rest_api_timeout_in_ms",
        "int",
        30000,
        "REST",
        "Deadline of a REST inference request (<=0: none); expiry answers HTTP 504.",
    ),
    Flag("rest_api_enable_cors_support", "bool", False, "REST", "Add CORS headers to every REST response."),
    Flag(
        "rest_api_max_body_bytes",
        "int",
        256 * 1024 * 1024,
        "REST",
        "Largest accepted request body (after gunzip); larger gets HTTP 413.",
        tf=False,
    ),
    Flag("host", "str", "0.0.0.0", "REST", "Interface both servers bind (TF Serving binds all interfaces).", tf=False),
    # Lifecycle
    Flag(
        "num_load_threads",
        "int",
        0,
        "Lifecycle",
        "Threads loading versions after start-up (0: as many as needed, up to 4 x CPUs).",
    ),
    Flag("num_unload_threads", "int", 0, "Lifecycle", "Threads unloading versions (0: one)."),
    Flag("max_num_load_retries", "int", 5, "Lifecycle", "Retries after a failed load of a version."),
    Flag("load_retry_interval_micros", "int", 60_000_000, "Lifecycle", "Wait between load retries, in microseconds."),
    Flag(
        "enable_model_warmup",
        "bool",
        True,
        "Lifecycle",
        "Replay assets.extra/tf_serving_warmup_requests when a version loads.",
    ),
    Flag("num_request_iterations_for_warmup", "int", 0, "Lifecycle", "Replay each warm-up record N times (0: once)."),
    Flag(
        "drain_grace_seconds",
        "float",
        30.0,
        "Lifecycle",
        "On SIGTERM/SIGINT, how long in-flight requests may take to finish.",
        tf=False,
    ),
    # Batching
    Flag(
        "enable_batching",
        "bool",
        False,
        "Batching",
        "Batch requests per model version (see --batching_parameters_file).",
    ),
    Flag("batching_parameters_file", "str", "", "Batching", "Text-format BatchingParameters."),
    Flag(
        "enable_per_model_batching_parameters",
        "bool",
        False,
        "Batching",
        "Read batching_params.pbtxt from each version folder.",
    ),
    # Runtime
    Flag(
        "tensorflow_session_parallelism",
        "int",
        0,
        "Runtime",
        "Threads per model for both intra- and inter-op work (0: runtime default).",
    ),
    Flag(
        "tensorflow_intra_op_parallelism",
        "int",
        0,
        "Runtime",
        "Intra-op threads per model, for every platform (0: runtime default).",
    ),
    Flag(
        "tensorflow_inter_op_parallelism",
        "int",
        0,
        "Runtime",
        "Inter-op threads per model, for every platform (0: runtime default).",
    ),
    Flag(
        "num_inference_threads",
        "int",
        _cpus(),
        "Runtime",
        "Worker threads running model calls when batching is off.",
        tf=False,
    ),
    Flag(
        "tensorflow_session_config_file",
        "str",
        "",
        "Runtime",
        "Text-format TF ConfigProto for TensorFlow models.",
        effect=False,
    ),
    Flag(
        "per_process_gpu_memory_fraction",
        "float",
        0.0,
        "Runtime",
        "Fraction of GPU memory TensorFlow may take (0: TF decides).",
    ),
    Flag("saved_model_tags", "str", "serve", "Runtime", "Comma-separated MetaGraph tags of SavedModels to load."),
    Flag("platform_config_file", "str", "", "Runtime", "Text-format PlatformConfigMap.", effect=False),
    Flag(
        "remove_unused_fields_from_bundle_metagraph",
        "bool",
        True,
        "Runtime",
        "TF Serving memory optimisation; no equivalent.",
        effect=False,
    ),
    Flag("prefer_tflite_model", "bool", False, "Runtime", "TFLite is not supported.", effect=False),
    Flag("num_tflite_pools", "int", _cpus(), "Runtime", "TFLite is not supported.", effect=False),
    Flag("num_tflite_interpreters_per_pool", "int", 1, "Runtime", "TFLite is not supported.", effect=False),
    Flag(
        "enable_signature_method_name_check",
        "bool",
        False,
        "Runtime",
        "Enforce SignatureDef.method_name for classify/regress/predict.",
    ),
    Flag(
        "xla_cpu_compilation_enabled", "bool", False, "Runtime", "XLA JIT on CPU for TensorFlow models.", effect=False
    ),
    Flag(
        "xla_gpu_compilation_enabled", "bool", False, "Runtime", "XLA JIT on GPU for TensorFlow models.", effect=False
    ),
    Flag(
        "thread_pool_factory_config_file", "str", "", "Runtime", "Custom TF thread pools; not supported.", effect=False
    ),
    Flag("mixed_precision", "str", "", "Runtime", "TF auto mixed precision (bfloat16).", effect=False),
    Flag("skip_initialize_tpu", "bool", False, "Runtime", "TPU builds only.", effect=False),
    # Monitoring
    Flag(
        "monitoring_config_file",
        "str",
        "",
        "Monitoring",
        "Text-format MonitoringConfig: Prometheus metrics on the REST port.",
        effect=False,
    ),
    # Other
    Flag("version", "bool", False, "Other", "Print the version and exit."),
)

FLAGS_BY_NAME = {f.name: f for f in FLAGS}


@dataclass(frozen=True)
class ServerOptions:
    """Parsed flags: ``values`` holds every flag by name (defaults filled in)."""

    values: dict[str, Any] = field(default_factory=lambda: {f.name: f.default for f in FLAGS})
    explicit: frozenset[str] = frozenset()

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("values")
        if values is not None and name in values:
            return values[name]
        raise AttributeError(name)

    def replace(self, **changes: Any) -> ServerOptions:
        unknown = set(changes) - set(FLAGS_BY_NAME)
        if unknown:
            raise KeyError(f"unknown options: {sorted(unknown)}")
        return ServerOptions({**self.values, **changes}, self.explicit | frozenset(changes))


class UsageError(Exception):
    """A command line that cannot be understood (exit status 2)."""


_TRUE = {"true": True, "false": False}


def _convert(flag: Flag, text: str) -> Any:
    try:
        if flag.kind == "bool":
            return _TRUE[text]
        if flag.kind == "int":
            return int(text)
        if flag.kind == "float":
            return float(text)
    except (KeyError, ValueError):
        kind = "true or false" if flag.kind == "bool" else f"a{'n' if flag.kind == 'int' else ''} {flag.kind}"
        raise UsageError(f"--{flag.name}: expected {kind}, got {text!r}") from None
    return text


def parse_flags(argv: Sequence[str]) -> ServerOptions:
    """``--name=value``, bare ``--flag`` for booleans, and ``--name value`` (which TF Serving ignores)."""
    values = {f.name: f.default for f in FLAGS}
    explicit: set[str] = set()
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("--") or arg == "--":
            raise UsageError(f"unexpected argument: {arg}")
        name, eq, text = arg[2:].partition("=")
        flag = FLAGS_BY_NAME.get(name)
        if flag is None:
            raise UsageError(f"unknown flag: --{name}")
        if not eq:
            if flag.kind == "bool":
                text = "true"
            elif i < len(args) and not args[i].startswith("--"):
                text = args[i]
                i += 1
            else:
                raise UsageError(f"--{name} needs a value: --{name}=VALUE")
        values[name] = _convert(flag, text)
        explicit.add(name)
    return ServerOptions(values, frozenset(explicit))
