"""Predict on one loaded version: request checks, tensor conversion, execution.

The checks answer with the status codes TensorFlow Serving uses (an unknown
signature is FAILED_PRECONDITION, bad inputs are INVALID_ARGUMENT) and each
message names the input and the problem. Everything that could make the server
allocate without bound (a TensorProto declaring billions of elements, a request
with more rows than allowed) is rejected before anything is decoded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from serving.errors import ServingError
from serving.model_loader import ServableVersion

DEFAULT_SIGNATURE = "serving_default"
# tf.errors codes are gRPC codes by number; a model error keeps its code.
_GRPC_CODES = {code.value[0]: code for code in grpc.StatusCode}

Arrays = dict[str, np.ndarray]
# Runs a signature on decoded inputs and returns its outputs as numpy arrays.
Executor = Callable[["Signature", Arrays], Arrays]


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """Per-request limits.

    Attributes:
        max_rows: Largest batch dimension (rows) one request may carry; 0 means
            no limit.
        max_elements: Largest element count one input may declare.
    """

    max_rows: int = 0
    max_elements: int = 64 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Signature:
    """One signature of one loaded version, as Predict sees it.

    Attributes:
        servable: The version it belongs to.
        name: Signature name.
        fn: Its concrete function.
        inputs: Input name -> spec.
        outputs: Output name -> spec.
    """

    servable: ServableVersion
    name: str
    fn: Any
    inputs: dict[str, tf.TensorSpec]
    outputs: dict[str, tf.TensorSpec]

    @property
    def batch_inputs(self) -> list[str]:
        """Inputs whose leading dimension is the (unknown-size) batch."""
        return sorted(name for name, spec in self.inputs.items() if spec.shape.rank and spec.shape[0] is None)

    @property
    def batchable(self) -> bool:
        """True if rows of several requests can be concatenated and split back.

        That needs at least one batch input and every output batched too; a
        signature with a scalar output (e.g. a sum over rows) is always run
        request by request.
        """
        return bool(self.batch_inputs) and all(
            spec.shape.rank and spec.shape[0] is None for spec in self.outputs.values()
        )


def find_signature(servable: ServableVersion, name: str) -> Signature:
    """Resolves a signature name (empty means ``serving_default``).

    Args:
        servable: The loaded version.
        name: Name from the request.

    Returns:
        The signature.

    Raises:
        ServingError: FAILED_PRECONDITION if the version has no such signature,
            as TF Serving answers.
    """
    name = name or DEFAULT_SIGNATURE
    fn = servable.signatures.get(name)
    if fn is None:
        raise ServingError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f'Serving signature key "{name}" not found in model {servable.model_name!r} version '
            f"{servable.version}; available signatures: {sorted(servable.signatures)}",
        )
    return Signature(servable, name, fn, dict(fn.structured_input_signature[1]), dict(fn.structured_outputs))


def _dtype_name(enum: int) -> str:
    """Names a DataType enum from a request, tolerating invalid values."""
    try:
        return tf.dtypes.as_dtype(enum).name
    except TypeError:
        return f"invalid DataType {enum}"


def _check_declared_shape(signature: Signature, name: str, proto: Any, limits: RequestLimits) -> list[int]:
    """Validates a TensorProto's declared shape before anything is decoded."""
    spec = signature.inputs[name]
    if proto.tensor_shape.unknown_rank:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"input {name!r}: tensor_shape has unknown rank")
    dims = [dim.size for dim in proto.tensor_shape.dim]
    if any(size < 0 for size in dims):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"input {name!r}: negative dimension in shape {dims}")
    if not spec.shape.is_compatible_with(dims):
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"signature {signature.name!r}: input {name!r} expects shape {spec.shape}, got {dims}",
        )
    if limits.max_rows and name in signature.batch_inputs and dims[0] > limits.max_rows:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input {name!r} has {dims[0]} rows; the maximum batch size per request is {limits.max_rows}",
        )
    elements = int(np.prod(dims, dtype=np.float64))
    if elements > limits.max_elements:
        raise ServingError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"input {name!r} declares {elements} elements; the limit per input is {limits.max_elements}",
        )
    return dims


def decode_inputs(signature: Signature, request: predict_pb2.PredictRequest, limits: RequestLimits) -> Arrays:
    """Checks request inputs against the signature and decodes them.

    Args:
        signature: The signature to run.
        request: The Predict request.
        limits: Size limits.

    Returns:
        Input name -> numpy array (object arrays of bytes for strings).

    Raises:
        ServingError: INVALID_ARGUMENT on missing/unknown names, dtype or shape
            mismatches, too many rows and undecodable TensorProtos;
            RESOURCE_EXHAUSTED on inputs declaring too many elements.
    """
    missing = sorted(set(signature.inputs) - set(request.inputs))
    unknown = sorted(set(request.inputs) - set(signature.inputs))
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"missing inputs {missing}")
        if unknown:
            problems.append(f"unknown inputs {unknown}")
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"signature {signature.name!r}: {'; '.join(problems)}; expected inputs {sorted(signature.inputs)}",
        )
    arrays = {}
    for name, spec in signature.inputs.items():
        proto = request.inputs[name]
        if proto.dtype != spec.dtype.as_datatype_enum:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"signature {signature.name!r}: input {name!r} expects dtype {spec.dtype.name}, "
                f"got {_dtype_name(proto.dtype)}",
            )
        dims = _check_declared_shape(signature, name, proto, limits)
        try:
            array = tf.make_ndarray(proto)
        except Exception as exc:  # noqa: BLE001 - any malformed TensorProto is the caller's error
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT, f"input {name!r}: cannot decode TensorProto: {exc}"
            ) from exc
        if list(array.shape) != dims:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input {name!r}: content decodes to shape {list(array.shape)}, declared {dims}",
            )
        arrays[name] = array
    return arrays


def run_signature(signature: Signature, inputs: Arrays) -> Arrays:
    """Calls a signature directly (no batching).

    Args:
        signature: The signature.
        inputs: Decoded inputs.

    Returns:
        Output name -> numpy array.

    Raises:
        ServingError: With the model error's own code (INVALID_ARGUMENT for an
            assertion on values, for example); INTERNAL for anything else.
    """
    try:
        # The explicit dtype keeps tf from guessing (and keeps empty arrays typed).
        tensors = {
            name: tf.convert_to_tensor(inputs[name], dtype=spec.dtype) for name, spec in signature.inputs.items()
        }
        outputs = signature.fn(**tensors)
        return {name: value.numpy() for name, value in outputs.items()}
    except tf.errors.OpError as exc:
        raise ServingError(_GRPC_CODES.get(exc.error_code, grpc.StatusCode.UNKNOWN), exc.message) from exc
    except (TypeError, ValueError) as exc:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"{type(exc).__name__}: {exc}") from exc


def predict(
    servable: ServableVersion,
    request: predict_pb2.PredictRequest,
    limits: RequestLimits,
    execute: Executor = run_signature,
) -> predict_pb2.PredictResponse:
    """Runs one Predict request against a loaded version.

    Used for client requests and for warmup replay, so warmup exercises the
    serving code path. The version is resolved by the caller.

    Args:
        servable: The version to run.
        request: The request.
        limits: Size limits.
        execute: Runs the signature (directly, or through a batcher).

    Returns:
        The response, with ``model_spec`` naming the version actually used.

    Raises:
        ServingError: With the status code to answer.
    """
    signature = find_signature(servable, request.model_spec.signature_name)
    unknown_filter = sorted(set(request.output_filter) - set(signature.outputs))
    if unknown_filter:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"output_filter names unknown outputs {unknown_filter}; signature {signature.name!r} "
            f"has outputs {sorted(signature.outputs)}",
        )
    outputs = execute(signature, decode_inputs(signature, request, limits))
    response = predict_pb2.PredictResponse()
    response.model_spec.name = servable.model_name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = signature.name
    for name in sorted(set(request.output_filter) or signature.outputs):
        response.outputs[name].CopyFrom(tf.make_tensor_proto(outputs[name], dtype=signature.outputs[name].dtype))
    return response
