"""Every command-line flag: every one TF Serving 2.x has shipped (same names, types and defaults) plus ours.

``ServerOptions`` is the one table: a frozen dataclass with one typed field per
flag, whose metadata holds the flag's group and help. ``FLAGS`` (what the
parser and ``--help`` read) is derived from it, and a flag's kind (int,
float, bool, str) is its field's type. A flag marked ``effect=False`` is
accepted for compatibility and produces one warning line saying it has no
effect yet.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_type_hints

from .platforms import cpus
from .storage import DEFAULT_PROTOCOLS

Kind = Literal["int", "float", "bool", "str"]
Group = Literal["Models", "gRPC", "REST", "Security", "Lifecycle", "Batching", "Runtime", "Monitoring", "Other"]
GROUPS: tuple[Group, ...] = get_args(Group)  # --help prints the groups in this order

_T = TypeVar("_T", bool, int, float, str)

# ``flag`` and ``computed`` return a ``dataclasses.Field``, which @dataclass takes as the field's
# definition; mypy sees a default of type _T, so a default that does not fit the field is an error.


def flag(default: _T, group: Group, help: str, *, effect: bool = True, tf: bool = True) -> _T:
    """A flag field; ``effect=False``: accepted, warned about, ignored; ``tf``: one of tensorflow_model_server's own."""
    return field(default=default, metadata={"group": group, "help": help, "effect": effect, "tf": tf})


def computed(factory: Callable[[], _T], group: Group, help: str, *, effect: bool = True, tf: bool = True) -> _T:
    """A flag whose default depends on the machine, computed when the options are made."""
    return field(default_factory=factory, metadata={"group": group, "help": help, "effect": effect, "tf": tf})


@dataclass(frozen=True, kw_only=True)
class ServerOptions:
    """Parsed flags, one field per flag (defaults filled in), and which of them the command line set."""

    # Models
    model_name: str = flag("default", "Models", "Name of the single model to serve (ignored with --model_config_file).")
    model_base_path: str = flag(
        "", "Models", "Base path of the single model: the folder holding numeric version folders."
    )
    model_config_file: str = flag("", "Models", "Text-format ModelServerConfig listing the models to serve.")
    model_config_file_poll_wait_seconds: int = flag(
        0, "Models", "Re-read --model_config_file every N seconds (0: read once)."
    )
    file_system_poll_wait_seconds: int = flag(
        1, "Models", "Scan base paths for new versions every N seconds (0 or less: only when a config is applied)."
    )
    allow_version_labels_for_unavailable_models: bool = flag(
        False, "Models", "Allow a new label to point at a version that is not yet AVAILABLE."
    )
    model_cache_dir: str = flag(
        "",
        "Models",
        "Folder where versions from object stores (s3://, gs://, az://) are downloaded before they load; kept, "
        "so a restart resumes (empty: a temporary folder, removed at exit).",
        tf=False,
    )
    model_cache_bytes: int = flag(
        0,
        "Models",
        "The most bytes the downloaded versions may hold (0: half the free space of --model_cache_dir's file "
        "system, logged); a version that does not fit fails to load with RESOURCE_EXHAUSTED, and is retried.",
        tf=False,
    )
    flush_filesystem_caches: bool = flag(
        True, "Models", "TF Serving frees file-system caches after loads; no equivalent here.", effect=False
    )
    # gRPC
    port: int = flag(8500, "gRPC", "gRPC port (0: no TCP gRPC; -1: any free port, logged).")
    grpc_socket_path: str = flag("", "gRPC", "Also serve gRPC on this UNIX domain socket.")
    grpc_channel_arguments: str = flag("", "gRPC", "Comma-separated key=value gRPC server channel arguments.")
    grpc_max_threads: int = computed(
        lambda: 4 * cpus.available(),
        "gRPC",
        "Threads of the threaded gRPC server (without --enable_batching), each running its calls' inference inline; "
        "with --enable_batching gRPC runs on the event loop and this is unused.",
    )
    enable_grpc_healthcheck_service: bool = flag(
        True,
        "gRPC",
        "Serve the standard grpc.health.v1.Health service, with a service name per model "
        "(TF Serving's default is false).",
    )
    ssl_config_file: str = flag("", "gRPC", "Text-format SSLConfig: TLS (and mTLS) for gRPC.")
    use_alts_credentials: bool = flag(False, "gRPC", "Google ALTS credentials; not supported here.", effect=False)
    enable_profiler: bool = flag(True, "gRPC", "TF profiler service; not provided.", effect=False)
    enable_serialization_as_tensor_content: bool = flag(
        False, "gRPC", "Predict responses carry tensor bytes in tensor_content."
    )
    # REST
    rest_api_port: int = flag(
        8501,
        "REST",
        "HTTP/REST port (0: no REST; -1: any free port, logged). TF Serving's own default is 0; its Docker image uses 8501.",
    )
    rest_api_num_threads: int = computed(
        lambda: 4 * cpus.available(),
        "REST",
        "TF Serving's REST thread pool size; requests here share --num_inference_threads.",
        effect=False,
    )
    rest_api_timeout_in_ms: int = flag(
        30000, "REST", "Deadline of a REST inference request (<=0: none); expiry answers HTTP 504."
    )
    rest_api_enable_cors_support: bool = flag(False, "REST", "Add CORS headers to every REST response.")
    # Nightly builds between 2.4 and 2.5 had these two names; launch scripts written then still use them.
    rest_api_enable_cors_headers: bool = flag(False, "REST", "Older name of --rest_api_enable_cors_support.")
    rest_api_max_body_bytes: int = flag(
        256 * 1024 * 1024, "REST", "Largest accepted request body (after gunzip); larger gets HTTP 413.", tf=False
    )
    # The REST listener's limits against slow and hostile clients (docs/security.md).
    rest_api_max_url_bytes: int = flag(16384, "REST", "Longest accepted request URL; longer gets HTTP 414.", tf=False)
    rest_api_max_header_bytes: int = flag(
        65536, "REST", "Most bytes of request header names and values; more gets HTTP 431.", tf=False
    )
    rest_api_max_headers: int = flag(100, "REST", "Most headers in one request; more gets HTTP 431.", tf=False)
    rest_api_header_timeout_seconds: float = flag(
        30.0,
        "REST",
        "A request's headers must all arrive this long after its first byte, else HTTP 408 (0: no limit).",
        tf=False,
    )
    rest_api_body_timeout_seconds: float = flag(
        60.0, "REST", "Longest wait between two reads of a request body, else HTTP 408 (0: no limit).", tf=False
    )
    rest_api_keep_alive_seconds: float = flag(
        75.0, "REST", "An idle connection closes this long after its last answer (0: never).", tf=False
    )
    rest_api_max_connections: int = flag(
        0,
        "REST",
        "Most open REST connections; more get HTTP 503 (0: the file descriptor limit less a reserve, logged).",
        tf=False,
    )
    rest_api_max_gzip_ratio: float = flag(
        100.0,
        "REST",
        "Most a gzip request body may inflate, as a multiple of its size (above 1 MiB); more gets HTTP 413 (0: no limit).",
        tf=False,
    )
    host: str = flag("0.0.0.0", "REST", "Interface both servers bind (TF Serving binds all interfaces).", tf=False)
    # Security (docs/security.md): TLS on REST, tokens on both ports, management, storage, paths in errors
    rest_api_tls: bool = flag(
        True,
        "Security",
        "With --ssl_config_file, REST serves HTTPS (mTLS with client_verify) too; false: plain HTTP, as TF Serving.",
        tf=False,
    )
    auth_token_file: str = flag(
        "",
        "Security",
        "Bearer tokens, one '<token> <scope>' per line (scope infer or admin); both ports then need one "
        "(REST 'Authorization: Bearer', gRPC 'authorization' metadata). Re-read on change. Empty: no tokens.",
        tf=False,
    )
    enable_management_api: bool = flag(
        True,
        "Security",
        "Serve model management (gRPC HandleReloadConfigRequest, admin scope); false answers UNIMPLEMENTED.",
        tf=False,
    )
    storage_protocols: str = flag(
        ",".join(DEFAULT_PROTOCOLS),
        "Security",
        "fsspec protocols base paths and config files may use (comma list); add http,https to allow them.",
        tf=False,
    )
    storage_timeout_seconds: float = flag(
        30.0, "Security", "Connect and read timeout of remote storage calls (s3, gs, az, http; <=0: theirs).", tf=False
    )
    expose_paths_in_errors: bool = flag(
        False, "Security", "Version status texts keep local paths (the log always does).", tf=False
    )
    # Lifecycle
    num_load_threads: int = flag(
        0, "Lifecycle", "Threads loading versions after start-up (0: as many as needed, up to 4 x CPUs)."
    )
    num_unload_threads: int = flag(0, "Lifecycle", "Threads unloading versions (0: one).")
    max_num_load_retries: int = flag(5, "Lifecycle", "Retries after a failed load of a version.")
    load_retry_interval_micros: int = flag(60_000_000, "Lifecycle", "Wait between load retries, in microseconds.")
    enable_model_warmup: bool = flag(
        True, "Lifecycle", "Replay assets.extra/tf_serving_warmup_requests when a version loads."
    )
    num_request_iterations_for_warmup: int = flag(0, "Lifecycle", "Replay each warm-up record N times (0: once).")
    drain_grace_seconds: float = flag(
        30.0, "Lifecycle", "On SIGTERM/SIGINT, how long in-flight requests may take to finish.", tf=False
    )
    # Batching
    enable_batching: bool = flag(
        False, "Batching", "Batch requests per model version (see --batching_parameters_file)."
    )
    batching_parameters_file: str = flag("", "Batching", "Text-format BatchingParameters.")
    enable_per_model_batching_parameters: bool = flag(
        False, "Batching", "Read batching_params.pbtxt from each version folder."
    )
    # Runtime
    tensorflow_session_parallelism: int = flag(
        0,
        "Runtime",
        "Threads per model for both intra- and inter-op work (0: the CPUs this process may use: affinity and cgroup quota).",
    )
    tensorflow_intra_op_parallelism: int = flag(
        0,
        "Runtime",
        "Intra-op threads per model, for every platform (0: the CPUs this process may use: affinity and cgroup quota).",
    )
    tensorflow_inter_op_parallelism: int = flag(
        0,
        "Runtime",
        "Inter-op threads per model, for every platform (0: the CPUs this process may use: affinity and cgroup quota).",
    )
    num_inference_threads: int = computed(
        cpus.available, "Runtime", "Worker threads running model calls when batching is off.", tf=False
    )
    tensorflow_session_config_file: str = flag(
        "", "Runtime", "Text-format TF ConfigProto for TensorFlow models.", effect=False
    )
    per_process_gpu_memory_fraction: float = flag(
        0.0, "Runtime", "Fraction of GPU memory TensorFlow may take (0: TF decides)."
    )
    saved_model_tags: str = flag("serve", "Runtime", "Comma-separated MetaGraph tags of SavedModels to load.")
    platform_config_file: str = flag("", "Runtime", "Text-format PlatformConfigMap.", effect=False)
    remove_unused_fields_from_bundle_metagraph: bool = flag(
        True, "Runtime", "TF Serving memory optimisation; no equivalent.", effect=False
    )
    prefer_tflite_model: bool = flag(
        False, "Runtime", "A version folder holding both a SavedModel and model.tflite serves the TF Lite model."
    )
    use_tflite_model: bool = flag(False, "Runtime", "Older name of --prefer_tflite_model.")
    num_tflite_pools: int = computed(cpus.available, "Runtime", "TF Lite interpreters each TF Lite model runs at once.")
    num_tflite_interpreters: int = computed(
        cpus.available, "Runtime", "Older name of --num_tflite_interpreters_per_pool; no effect.", effect=False
    )
    num_tflite_interpreters_per_pool: int = flag(
        1, "Runtime", "TF Serving batches inside each TF Lite pool; here batching is --enable_batching's.", effect=False
    )
    frontend_processes: int = flag(
        0,
        "Runtime",
        "Processes answering REST and gRPC on the same ports (SO_REUSEPORT), in front of one engine that holds "
        "each model once with its batch queue; tensors cross in shared memory (0: chosen from the CPUs this "
        "process may use: 1 below 4 CPUs, else half of them, at most 8; logged).",
        tf=False,
    )
    memory_budget_bytes: int = flag(
        0,
        "Runtime",
        "Bytes all requests in flight may hold, decoded inputs, outputs and encodings included; a request "
        "that would pass it gets RESOURCE_EXHAUSTED / HTTP 429 (0: half the memory this process may use: "
        "cgroup limit, RLIMIT_AS or RAM, the least; logged).",
        tf=False,
    )
    request_memory_budget_bytes: int = flag(
        0,
        "Runtime",
        "Bytes one request may hold; more gets RESOURCE_EXHAUSTED / HTTP 413 (0: a quarter of "
        "--memory_budget_bytes, at most 2 GiB; logged).",
        tf=False,
    )
    enable_signature_method_name_check: bool = flag(
        False, "Runtime", "Enforce SignatureDef.method_name for classify/regress/predict."
    )
    xla_cpu_compilation_enabled: bool = flag(False, "Runtime", "XLA JIT on CPU for TensorFlow models.", effect=False)
    xla_gpu_compilation_enabled: bool = flag(False, "Runtime", "XLA JIT on GPU for TensorFlow models.", effect=False)
    thread_pool_factory_config_file: str = flag("", "Runtime", "Custom TF thread pools; not supported.", effect=False)
    mixed_precision: str = flag("", "Runtime", "TF auto mixed precision (bfloat16).", effect=False)
    skip_initialize_tpu: bool = flag(False, "Runtime", "TPU builds only.", effect=False)
    # Monitoring
    monitoring_config_file: str = flag(
        "",
        "Monitoring",
        "Text-format MonitoringConfig: with prometheus_config { enable: true }, TF Serving's metrics on the "
        "REST port at its path (default /monitoring/prometheus/metrics).",
    )
    enable_metrics: bool = flag(
        True, "Monitoring", "modelserve's own Prometheus metrics at /metrics (docs/observability.md).", tf=False
    )
    metrics_port: int = flag(
        0,
        "Monitoring",
        "Serve /metrics on this port of its own (plain HTTP; -1: any free port); 0: on the REST port.",
        tf=False,
    )
    enable_dashboard: bool = flag(
        True, "Monitoring", "Serve the live dashboard at /dashboard on the REST port.", tf=False
    )
    # Logs, traces and probes (docs/observability.md)
    log_level: str = flag(
        "info", "Monitoring", "Least severe log lines written: debug, info, warning or error.", tf=False
    )
    log_format: str = flag(
        "text", "Monitoring", "text (TF Serving-like lines) or json (one object per line).", tf=False
    )
    access_log: str = flag(
        "", "Monitoring", "One line per request: '' off, '-' to stderr, else a file path (appended to).", tf=False
    )
    access_log_sample_rate: float = flag(
        1.0,
        "Monitoring",
        "Share of successful requests the access log writes (0..1); errors are always written.",
        tf=False,
    )
    enable_tracing: bool = flag(
        False,
        "Monitoring",
        "OpenTelemetry spans per request (the otel extra); exported by OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.",
        tf=False,
    )
    drain_delay_seconds: float = flag(
        0.0,
        "Monitoring",
        "On SIGTERM/SIGINT, report not ready at once and go on serving this long before the drain closes "
        "connections (the time load balancers take to stop sending).",
        tf=False,
    )
    # Other
    version: bool = flag(False, "Other", "Print the version and exit.")

    explicit: frozenset[str] = frozenset()  # not a flag: the flags the command line set

    def replace(self, **changes: Any) -> ServerOptions:
        """These flags changed (and counted as set explicitly); an unknown name is a ``KeyError``."""
        unknown = set(changes) - set(FLAGS_BY_NAME)
        if unknown:
            raise KeyError(f"unknown options: {sorted(unknown)}")
        return dataclasses.replace(self, **changes, explicit=self.explicit | frozenset(changes))


@dataclass(frozen=True)
class Flag:
    """One row of the table, as ``--help`` and the parser read it."""

    name: str
    kind: Kind
    default: bool | int | float | str  # a computed default as it is on this machine
    group: Group
    help: str
    effect: bool = True  # False: accepted, warned about, ignored
    tf: bool = True  # one of tensorflow_model_server's own flags


# A field of any other type has no conversion: _flags() fails at import, not at the first use.
_KINDS: dict[object, Kind] = {bool: "bool", int: "int", float: "float", str: "str"}


def _flags() -> tuple[Flag, ...]:
    types = get_type_hints(ServerOptions)
    defaults = ServerOptions()
    return tuple(
        Flag(f.name, _KINDS[types[f.name]], getattr(defaults, f.name), **f.metadata)
        for f in dataclasses.fields(ServerOptions)
        if f.name != "explicit"
    )


FLAGS = _flags()
FLAGS_BY_NAME = {f.name: f for f in FLAGS}


class UsageError(Exception):
    """A command line that cannot be understood (exit status 2)."""


_TRUE = {"true": True, "false": False}


def _convert(flag: Flag, text: str) -> bool | int | float | str:
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


def command_line(options: ServerOptions) -> list[str]:
    """The flags that parse back into ``options``: the ones set explicitly, as ``--name=value``."""
    args = []
    for name in sorted(options.explicit):
        value = getattr(options, name)
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        args.append(f"--{name}={text}")
    return args


def parse_flags(argv: Sequence[str]) -> ServerOptions:
    """``--name=value``, bare ``--flag`` for booleans, and ``--name value`` (which TF Serving ignores)."""
    values: dict[str, Any] = {}
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
    return ServerOptions(**values, explicit=frozenset(values))
