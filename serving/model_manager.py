"""The set of served models, as a ``ModelServerConfig`` describes it.

One `ServableVersions` per configured model, plus each model's version labels.
A new config (from ``--model_config_file``, its re-reads, or
``HandleReloadConfigRequest``) adds, reconfigures and removes models, loads
what the new policies ask for, and then applies the labels under TF Serving's
rule: a label may only point to an AVAILABLE version, unless the label is new
and ``--allow_version_labels_for_unavailable_models`` is set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import grpc
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.errors import ServingError
from serving.model_loader import (
    NoServableVersionError,
    ServableVersion,
    ServableVersions,
    VersionNotFoundError,
    VersionState,
    WarmupFn,
)

logger = logging.getLogger(__name__)

# TF Serving accepts an empty platform as "tensorflow"; it is the only one here.
SUPPORTED_PLATFORMS = ("", "tensorflow")


def validate_config(config: model_server_config_pb2.ModelServerConfig) -> None:
    """Checks a config before anything is applied.

    Args:
        config: The config.

    Raises:
        ServingError: INVALID_ARGUMENT naming the first problem (no model list,
            duplicate or empty names, empty base path, unsupported platform).
    """
    if config.WhichOneof("config") != "model_config_list":
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "ModelServerConfig must set model_config_list")
    seen: set[str] = set()
    for model in config.model_config_list.config:
        if not model.name:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "every model config needs a name")
        if model.name in seen:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"model {model.name!r} is configured twice")
        seen.add(model.name)
        if not model.base_path:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"model {model.name!r} has no base_path")
        if model.model_platform not in SUPPORTED_PLATFORMS:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"model {model.name!r}: model_platform {model.model_platform!r} is not supported; use 'tensorflow'",
            )


class ModelManager:
    """Holds the served models and answers which version serves a ModelSpec."""

    def __init__(
        self,
        warmup: WarmupFn | None = None,
        allow_labels_for_unavailable: bool = False,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        """Initialises an empty manager; `apply_config` adds models.

        Args:
            warmup: Replays one warmup request on a freshly loaded version.
            allow_labels_for_unavailable: Let a new label point to a version
                that is not AVAILABLE (TF Serving's
                ``--allow_version_labels_for_unavailable_models``).
            on_change: Called after any version was loaded or unloaded.
        """
        self._warmup = warmup
        self._allow_labels_for_unavailable = allow_labels_for_unavailable
        self._on_change = on_change
        # Requests read these two dicts without a lock: they are replaced, never mutated.
        self._models: dict[str, ServableVersions] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._config_lock = threading.Lock()
        self.config = model_server_config_pb2.ModelServerConfig()

    def apply_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Makes the served models match a config, as TF Serving's ReloadConfig does.

        Added models are loaded (and updated ones re-polled) before this
        returns; removed models are unloaded. Labels are applied last; if they
        break the label rule the models stay as configured, the old labels are
        kept, and the error is raised.

        Args:
            config: The new config.

        Raises:
            ServingError: INVALID_ARGUMENT for an invalid config,
                FAILED_PRECONDITION for a label on an unavailable version.
        """
        validate_config(config)
        with self._config_lock:
            models = dict(self._models)
            wanted = {model.name: model for model in config.model_config_list.config}
            for name, model in wanted.items():
                if name in models:
                    models[name].reconfigure(model.base_path, model.model_version_policy)
                else:
                    models[name] = ServableVersions(
                        name, model.base_path, model.model_version_policy, self._warmup, self._on_change
                    )
            for name in sorted(wanted):
                models[name].poll_once()
            removed = [models.pop(name) for name in sorted(set(models) - set(wanted))]
            self._models = models
            self._labels = {name: labels for name, labels in self._labels.items() if name in wanted}
            for versions in removed:
                logger.info("Model %s removed from the config; unloading it", versions.model_name)
                versions.unload_all()
            self.config = config
            self._labels = self._checked_labels(config)
        if self._on_change is not None:
            self._on_change()

    def _checked_labels(self, config: model_server_config_pb2.ModelServerConfig) -> dict[str, dict[str, int]]:
        labels: dict[str, dict[str, int]] = {}
        for model in config.model_config_list.config:
            available = set(self._models[model.name].available())
            old = self._labels.get(model.name, {})
            for label, version in sorted(model.version_labels.items()):
                # Like TF Serving, the flag only covers a label that is new or
                # unchanged: moving an existing label needs the target loaded.
                may_be_unavailable = self._allow_labels_for_unavailable and old.get(label, version) == version
                if version not in available and not may_be_unavailable:
                    raise ServingError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"Request to assign label {label!r} to version {version} of model {model.name!r}, "
                        f"which is not currently available for inference (available: {sorted(available)})",
                    )
            labels[model.name] = dict(model.version_labels)
        return labels

    def poll_file_system(self) -> None:
        """Re-scans every model's base path once (the file-system poll)."""
        for versions in list(self._models.values()):
            try:
                versions.poll_once()
            except Exception:  # noqa: BLE001 - one model's bad directory must not stop the others
                logger.exception("Polling %s failed", versions.base_path)

    def model_names(self) -> list[str]:
        """Returns the configured model names, sorted."""
        return sorted(self._models)

    def ready(self) -> bool:
        """True when every configured model has at least one AVAILABLE version."""
        models = self._models
        return bool(models) and all(versions.available() for versions in models.values())

    def loaded_versions(self) -> dict[str, int]:
        """Returns model name -> number of AVAILABLE versions."""
        return {name: len(versions.available()) for name, versions in self._models.items()}

    def _versions(self, name: str) -> ServableVersions:
        versions = self._models.get(name)
        if versions is None:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found: model {name!r} is not configured; served models: {self.model_names()}",
            )
        return versions

    def _requested_version(self, spec: model_pb2.ModelSpec) -> int | None:
        """The version number a ModelSpec asks for (None: the latest)."""
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            return spec.version.value
        if choice == "version_label":
            labels = self._labels.get(spec.name, {})
            if spec.version_label not in labels:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Unrecognized servable version label: {spec.version_label!r} for model {spec.name!r}; "
                    f"labels: {sorted(labels)}",
                )
            return labels[spec.version_label]
        return None

    def resolve(self, spec: model_pb2.ModelSpec) -> ServableVersion:
        """Maps a request's ModelSpec to the loaded version that serves it.

        Args:
            spec: The request's ModelSpec.

        Returns:
            The version.

        Raises:
            ServingError: NOT_FOUND for an unknown model or version,
                INVALID_ARGUMENT for an unknown label, UNAVAILABLE while the
                model has no loaded version yet (clients retry that).
        """
        versions = self._versions(spec.name)
        try:
            return versions.get(self._requested_version(spec))
        except NoServableVersionError as exc:
            raise ServingError(grpc.StatusCode.UNAVAILABLE, str(exc)) from exc
        except VersionNotFoundError as exc:
            raise ServingError(grpc.StatusCode.NOT_FOUND, str(exc)) from exc

    def status(self, spec: model_pb2.ModelSpec) -> list[VersionState]:
        """Returns the version states GetModelStatus reports for a ModelSpec.

        Raises:
            ServingError: NOT_FOUND for an unknown model, an unknown version or
                a model with no version seen yet; INVALID_ARGUMENT for an
                unknown label.
        """
        versions = self._versions(spec.name)
        states = versions.states()
        requested = self._requested_version(spec)
        if requested is not None:
            states = [state for state in states if state.version == requested]
            if not states:
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"model {spec.name!r} has no version {requested}")
        if not states:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"Could not find any versions of model {spec.name!r} under {versions.base_path}",
            )
        return states
