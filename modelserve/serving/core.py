"""The protocol-neutral core every front end calls: lookup, validation, inference.

Front ends translate their wire format to ``dict[str, numpy.ndarray]`` and
back, and map ``ServingError`` codes to their own status codes; everything
else a request needs lives here, once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..dtypes import DType, from_numpy, tf_name
from ..errors import FailedPrecondition, InvalidArgument
from ..execution.request_options import DEFAULT, RequestOptions
from ..lifecycle.config import ModelConfig
from ..lifecycle.manager import Lease, ModelManager, VersionReport
from ..signatures import DEFAULT_SIGNATURE, Signature, TensorSpec
from . import example_tasks


@dataclass(frozen=True)
class ModelSpec:
    """Which model, version and signature a request names (TF Serving's ModelSpec)."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""

    @property
    def signature(self) -> str:
        return self.signature_name or DEFAULT_SIGNATURE


class ServingCore:
    """Shared by all front ends. Thread-safe; ``predict`` is awaited on the event loop."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def lease(self, spec: ModelSpec) -> Lease:
        if not spec.name:
            raise InvalidArgument("ModelSpec has no name specified.")
        return self.manager.lease(spec.name, spec.version, spec.label)

    def status(self, name: str, version: int | None = None) -> list[VersionReport]:
        return self.manager.status(name, version)

    def predict(
        self,
        lease: Lease,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        deadline: float | None = None,
        request_options: RequestOptions = DEFAULT,
    ) -> Awaitable[dict[str, np.ndarray]]:
        """Validate a Predict request against its signature (gRPC's rules and texts; a bad one raises
        here), then the runner's awaitable outputs."""
        check_predict(lease.servable.signatures, signature_name, inputs, output_filter)
        return lease.runner.predict(signature_name, inputs, output_filter, deadline, request_options)

    def predict_blocking(
        self,
        lease: Lease,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        deadline: float | None = None,
        request_options: RequestOptions = DEFAULT,
    ) -> dict[str, np.ndarray]:
        """``predict`` for callers on their own thread (never the event loop): same checks, inline run."""
        check_predict(lease.servable.signatures, signature_name, inputs, output_filter)
        return lease.runner.predict_blocking(signature_name, inputs, output_filter, deadline, request_options)

    async def run_plans(
        self,
        lease: Lease,
        plans: Sequence[example_tasks.Plan],
        deadline: float | None = None,
        request_options: RequestOptions = DEFAULT,
    ) -> list[example_tasks.Result]:
        """Run classify/regress plans (``modelserve.serving.example_tasks``) and read their outputs."""
        results = []
        for plan in plans:
            outputs = await lease.runner.predict(
                plan.signature_name, plan.inputs, plan.output_filter, deadline, request_options
            )
            results.append(plan.interpret(outputs))
        return results

    def run_plans_blocking(
        self,
        lease: Lease,
        plans: Sequence[example_tasks.Plan],
        deadline: float | None = None,
        request_options: RequestOptions = DEFAULT,
    ) -> list[example_tasks.Result]:
        run = lease.runner.predict_blocking
        return [
            plan.interpret(run(plan.signature_name, plan.inputs, plan.output_filter, deadline, request_options))
            for plan in plans
        ]

    def reload_and_wait(self, models: Sequence[ModelConfig], timeout: float | None = None) -> None:
        """TF Serving's ReloadConfig (gRPC HandleReloadConfigRequest, --model_config_file polls).

        The whole config is replaced; waits until newly added models are
        AVAILABLE or failed; raises ServingError with TF's texts. Blocking:
        call it from a thread. Semantics in ``ModelManager.reload``.
        """
        self.manager.reload(models, timeout)


def check_predict(
    signatures: Mapping[str, Signature],
    signature_name: str,
    inputs: Mapping[str, np.ndarray],
    output_filter: Collection[str],
) -> None:
    """Every check a Predict request passes before it runs, in TF Serving's order."""
    signature = find_signature(signatures, signature_name)
    check_inputs(signature, inputs)
    check_output_filter(signature, output_filter)


def find_signature(signatures: Mapping[str, Signature], signature_name: str) -> Signature:
    signature = signatures.get(signature_name)
    if signature is None:
        raise FailedPrecondition(f'Serving signature key "{signature_name}" not found.')
    return signature


def check_inputs(signature: Signature, inputs: Mapping[str, np.ndarray]) -> None:
    """TF Serving's input-set checks, then dtype and shape checks against the signature."""
    if inputs.keys() != signature.inputs.keys():
        _check_input_names(signature, inputs)
    for index, (alias, array) in enumerate(sorted(inputs.items())):
        spec = signature.inputs[alias]
        check_dtype(index, spec, array)
        check_shape(alias, spec, array)


def _check_input_names(signature: Signature, inputs: Mapping[str, np.ndarray]) -> None:
    expected = set(signature.inputs)
    sent = set(inputs)
    if not (sent < expected and expected - sent <= set(signature.defaults)):
        extra = sorted(sent - expected)
        missing = sorted(expected - sent)
        raise InvalidArgument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{_join(sorted(sent))}}}) != len({{{_join(sorted(expected))}}}). "
            f"Sent extra: {{{_join(extra)}}}. Missing but required: {{{_join(missing)}}}."
        )


def check_dtype(index: int, spec: TensorSpec, array: np.ndarray) -> None:
    got = from_numpy(array.dtype)
    if got != spec.dtype:
        raise InvalidArgument(f"Expects arg[{index}] to be {tf_name(spec.dtype)} but {tf_name(got)} is provided")


def check_shape(alias: str, spec: TensorSpec, array: np.ndarray) -> None:
    if spec.shape is None:
        return
    ok = len(spec.shape) == array.ndim and all(
        want in (-1, got) for want, got in zip(spec.shape, array.shape, strict=True)
    )
    if not ok:
        raise InvalidArgument(
            f"Input '{alias}' has shape {_shape(array.shape)} but the signature expects {_shape(spec.shape)}"
        )


def check_output_filter(signature: Signature, output_filter: Collection[str]) -> None:
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise InvalidArgument(
                f"output tensor alias not found in signature: {alias} "
                f"Outputs expected to be in the set {{{_join(sorted(signature.outputs))}}}."
            )
        if alias in seen:
            raise InvalidArgument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)


def input_dtypes(signature: Signature) -> dict[str, DType]:
    return {alias: spec.dtype for alias, spec in signature.inputs.items()}


def _join(names: Collection[str]) -> str:
    return ",".join(names)


def _shape(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"
