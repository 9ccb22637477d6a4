"""Property-based: random TensorProtos at Predict never crash the server or get INTERNAL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.server_config import ServerOptions
from tests.serving.toy import MODEL, SIGNATURES, Stubs, in_process_server, make_request, push_version

MAX_MESSAGE_BYTES = 1024 * 1024
INPUT_NAMES = ("x", "ids", "rows", "k", "z", "")
# The toy signatures' real inputs: most requests use them so the checks past the names get exercised.
SIGNATURE_INPUTS = {"serving_default": ["x"], "scale": ["x"], "lookup": ["ids"], "top": ["rows", "k"]}
# Mostly the dtypes the signatures take, then every DataType enum value, and values that name none.
DTYPES = st.one_of(
    st.sampled_from((types_pb2.DT_FLOAT, types_pb2.DT_STRING, types_pb2.DT_INT32)),
    st.sampled_from(sorted(types_pb2.DataType.values())),
    st.integers(-5, 200),
)


@st.composite
def tensor_protos(draw: st.DrawFn) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=draw(DTYPES))
    if draw(st.booleans()):
        proto.tensor_shape.unknown_rank = draw(st.booleans())
        for size in draw(st.lists(st.integers(-2, 10**7), max_size=4)):
            proto.tensor_shape.dim.add(size=size)
    contents = draw(st.integers(0, 6))
    if contents == 0:
        proto.tensor_content = draw(st.binary(max_size=64))
    elif contents == 1:
        proto.float_val.extend(draw(st.lists(st.floats(width=32), max_size=8)))
    elif contents == 2:
        proto.int_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8)))
    elif contents == 3:
        proto.string_val.extend(draw(st.lists(st.binary(max_size=16), max_size=8)))
    elif contents == 4:
        proto.int64_val.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=8)))
    elif contents == 5:
        proto.double_val.extend(draw(st.lists(st.floats(), max_size=8)))
    return proto


@st.composite
def predict_requests(draw: st.DrawFn) -> object:
    signature = draw(st.sampled_from((*SIGNATURES, "", "nope")))
    request = make_request(signature)
    request.model_spec.name = draw(st.sampled_from((MODEL, MODEL, MODEL, "other", "")))
    choice = draw(st.integers(0, 3))
    if choice == 1:
        request.model_spec.version.value = draw(st.integers(-1, 3))
    elif choice == 2:
        request.model_spec.version_label = draw(st.sampled_from(("stable", "", "x")))
    names = draw(
        st.one_of(
            st.just(SIGNATURE_INPUTS.get(signature or "serving_default", [])),
            st.lists(st.sampled_from(INPUT_NAMES), max_size=3, unique=True),
        )
    )
    for name in names:
        request.inputs[name].CopyFrom(draw(tensor_protos()))
    if draw(st.booleans()):
        request.output_filter.extend(draw(st.lists(st.sampled_from(("y", "total", "values", "nope")), max_size=2)))
    return request


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stubs]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    push_version(root / "models", 1, factor=2.0, staging=root)
    options = ServerOptions(
        port=0,
        model_name=MODEL,
        model_base_path=str(root / "models"),
        file_system_poll_wait_seconds=0,
        grpc_max_message_bytes=MAX_MESSAGE_BYTES,
        max_request_batch_size=1000,
    )
    with in_process_server(options) as (_server, stubs):
        yield stubs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=predict_requests())
def test_random_tensor_protos_get_a_clean_answer(stubs: Stubs, request: object) -> None:
    try:
        stubs.predict.Predict(request, timeout=20)
    except grpc.RpcError as err:
        assert err.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), err.details()
        assert err.details(), f"{err.code()} without a message"
    # The server still answers a valid request.
    assert stubs.served_version() == 1
