"""TF Serving's config messages that ``tensorflow-serving-api`` does not ship.

The PyPI package holds ``model_server_config_pb2`` but not the messages behind
``--batching_parameters_file`` (``BatchingParameters``), ``--monitoring_config_file``
(``MonitoringConfig``) and ``--ssl_config_file`` (``SSLConfig``). They are declared
here with the same package, message names, field names, types and numbers as
TF Serving's ``session_bundle_config.proto``, ``monitoring_config.proto`` and
``ssl_config.proto``, so a file written for ``tensorflow_model_server`` parses
here with protobuf's own text-format parser, and a file accepted here is accepted
there. They live in a private descriptor pool so they can never clash with a
generated module that another package may register later.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

_FieldType = descriptor_pb2.FieldDescriptorProto
_INT64 = ".google.protobuf.Int64Value"
_POOL = descriptor_pool.DescriptorPool()
_POOL.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)

# (name, number, type, label, message type) per field, as in TF Serving's .proto files.
_MESSAGES: dict[str, list[tuple[str, int, int, int, str]]] = {
    "BatchingParameters": [
        ("max_batch_size", 1, _FieldType.TYPE_MESSAGE, _FieldType.LABEL_OPTIONAL, _INT64),
        ("batch_timeout_micros", 2, _FieldType.TYPE_MESSAGE, _FieldType.LABEL_OPTIONAL, _INT64),
        ("max_enqueued_batches", 3, _FieldType.TYPE_MESSAGE, _FieldType.LABEL_OPTIONAL, _INT64),
        ("num_batch_threads", 4, _FieldType.TYPE_MESSAGE, _FieldType.LABEL_OPTIONAL, _INT64),
        ("thread_pool_name", 5, _FieldType.TYPE_MESSAGE, _FieldType.LABEL_OPTIONAL, ".google.protobuf.StringValue"),
        ("allowed_batch_sizes", 6, _FieldType.TYPE_INT64, _FieldType.LABEL_REPEATED, ""),
        ("pad_variable_length_inputs", 7, _FieldType.TYPE_BOOL, _FieldType.LABEL_OPTIONAL, ""),
    ],
    "PrometheusConfig": [
        ("enable", 1, _FieldType.TYPE_BOOL, _FieldType.LABEL_OPTIONAL, ""),
        ("path", 2, _FieldType.TYPE_STRING, _FieldType.LABEL_OPTIONAL, ""),
    ],
    "MonitoringConfig": [
        (
            "prometheus_config",
            1,
            _FieldType.TYPE_MESSAGE,
            _FieldType.LABEL_OPTIONAL,
            ".tensorflow.serving.PrometheusConfig",
        ),
    ],
    "SSLConfig": [
        ("server_key", 1, _FieldType.TYPE_STRING, _FieldType.LABEL_OPTIONAL, ""),
        ("server_cert", 2, _FieldType.TYPE_STRING, _FieldType.LABEL_OPTIONAL, ""),
        ("custom_ca", 3, _FieldType.TYPE_STRING, _FieldType.LABEL_OPTIONAL, ""),
        ("client_verify", 4, _FieldType.TYPE_BOOL, _FieldType.LABEL_OPTIONAL, ""),
    ],
}


def _build_file() -> None:
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="interest_graph/tf_serving_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    for message_name, fields in _MESSAGES.items():
        message = file_proto.message_type.add(name=message_name)
        for name, number, field_type, label, type_name in fields:
            field = message.field.add(name=name, number=number, type=field_type, label=label)
            if type_name:
                field.type_name = type_name
    _POOL.Add(file_proto)


_build_file()


def _message_class(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"tensorflow.serving.{name}"))


BatchingParameters = _message_class("BatchingParameters")
MonitoringConfig = _message_class("MonitoringConfig")
SSLConfig = _message_class("SSLConfig")


def parse_text_file(path: str, message_class: Any) -> Any:
    """Parses a text-format proto file, naming the file in any error.

    Args:
        path: File to read.
        message_class: Message class to parse into.

    Returns:
        The parsed message.

    Raises:
        ValueError: If the file cannot be read or is not a valid text proto of
            that message.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        return text_format.Parse(text, message_class())
    except (OSError, UnicodeDecodeError, text_format.ParseError) as exc:
        raise ValueError(f"{path}: not a valid {message_class.DESCRIPTOR.full_name} text proto: {exc}") from exc
