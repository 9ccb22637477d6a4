"""Versioned SavedModel loading with TensorFlow Serving's on-disk layout.

A model lives under ``<model_base_path>/<integer version>/saved_model.pb``. This
module finds those versions, loads the ones the model's version policy asks for
with ``tf.saved_model.load``, replays their warmup requests, and, polled again,
swaps in newly pushed versions without a restart.

Only ``tensorflow`` and the ``tensorflow_serving`` protos are imported: the
server knows a model only as a SavedModel on disk, exactly like the real
``tensorflow_model_server``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_status_pb2, predict_pb2, prediction_log_pb2
from tensorflow_serving.config import file_system_storage_path_source_pb2

logger = logging.getLogger(__name__)

SAVED_MODEL_FILENAMES = ("saved_model.pb", "saved_model.pbtxt")
WARMUP_RELATIVE_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")
# TF Serving refuses warmup files with more records than this; we stop reading there.
MAX_WARMUP_RECORDS = 1000
# Added by tf.saved_model.save for variable initialisation; not a serving endpoint.
INIT_OP_SIGNATURE_KEY = "__saved_model_init_op"
VersionPolicy = file_system_storage_path_source_pb2.FileSystemStoragePathSourceConfig.ServableVersionPolicy
_STATE = get_model_status_pb2.ModelVersionStatus


class NoServableVersionError(Exception):
    """Raised when the model has no successfully loaded version yet."""


class VersionNotFoundError(Exception):
    """Raised when a client asks for a version that is not being served."""


@dataclasses.dataclass(frozen=True)
class ServableVersion:
    """One loaded, warmed-up version of a model, ready to take traffic.

    Attributes:
        model_name: Name clients use in ``ModelSpec.name``.
        version: Integer version (the directory name).
        path: Directory the SavedModel was loaded from.
        loaded: The object returned by ``tf.saved_model.load``; kept so the
            signatures' variables stay alive.
        signatures: Concrete functions by signature name.
        signature_defs: The SignatureDefs from ``saved_model.pb`` (what the C++
            TF Serving would see), without the internal init-op entry.
        load_seconds: Time spent in ``tf.saved_model.load``.
        warmup_seconds: Time spent replaying warmup requests.
        warmup_requests: Number of warmup requests replayed.
    """

    model_name: str
    version: int
    path: str
    loaded: Any
    signatures: dict[str, Any]
    signature_defs: dict[str, meta_graph_pb2.SignatureDef]
    load_seconds: float = 0.0
    warmup_seconds: float = 0.0
    warmup_requests: int = 0


@dataclasses.dataclass(frozen=True)
class VersionState:
    """What the loader knows about one version, for ``GetModelStatus``.

    Attributes:
        version: Integer version.
        state: A ``ModelVersionStatus.State`` value (LOADING, AVAILABLE,
            UNLOADING or END).
        error: Load error message, or None if the version loaded (or was
            unloaded normally).
    """

    version: int
    state: int
    error: str | None = None


WarmupFn = Callable[[ServableVersion, predict_pb2.PredictRequest], Any]


def saved_model_file(version_dir: str) -> str | None:
    """Returns the SavedModel proto file inside a version directory.

    Args:
        version_dir: A ``<model_base_path>/<version>`` directory.

    Returns:
        The path of ``saved_model.pb`` (or ``.pbtxt``), or None while the
        version is still being written and has no such file.
    """
    for name in SAVED_MODEL_FILENAMES:
        candidate = os.path.join(version_dir, name)
        if tf.io.gfile.exists(candidate):
            return candidate
    return None


def scan_versions(base_path: str) -> dict[int, str]:
    """Lists the complete versions under a model base path.

    Args:
        base_path: The model base path.

    Returns:
        Version number -> version directory, for every child whose name is a
        non-negative integer and that already holds a SavedModel proto.
    """
    if not tf.io.gfile.isdir(base_path):
        return {}
    versions = {}
    for entry in tf.io.gfile.listdir(base_path):
        name = entry.rstrip("/")
        # TF Serving ignores anything whose name is not a plain integer
        # (e.g. temporary upload directories).
        if not name.isdigit():
            continue
        version_dir = os.path.join(base_path, name)
        if tf.io.gfile.isdir(version_dir) and saved_model_file(version_dir):
            versions[int(name)] = version_dir
    return versions


def read_signature_defs(version_dir: str) -> dict[str, meta_graph_pb2.SignatureDef]:
    """Reads the SignatureDefs of a SavedModel straight from its proto file.

    Args:
        version_dir: Directory holding ``saved_model.pb`` (or ``.pbtxt``).

    Returns:
        Signature name -> SignatureDef of the first MetaGraph (the ``serve``
        one written by ``tf.saved_model.save``), without the init-op entry.

    Raises:
        FileNotFoundError: If the directory holds no SavedModel proto.
        ValueError: If the proto is corrupt or holds no MetaGraph.
    """
    path = saved_model_file(version_dir)
    if path is None:
        raise FileNotFoundError(f"no saved_model.pb in {version_dir}")
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    try:
        if path.endswith(".pbtxt"):
            text_format.Parse(data.decode("utf-8"), saved_model)
        else:
            saved_model.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001 - DecodeError/ParseError/UnicodeError alike
        raise ValueError(f"{path} is not a valid SavedModel proto: {exc}") from exc
    if not saved_model.meta_graphs:
        raise ValueError(f"{path} holds no MetaGraph")
    return {
        key: signature
        for key, signature in saved_model.meta_graphs[0].signature_def.items()
        if key != INIT_OP_SIGNATURE_KEY
    }


def read_warmup_requests(version_dir: str) -> Iterator[predict_pb2.PredictRequest]:
    """Yields the Predict requests of a version's warmup file.

    Args:
        version_dir: A ``<model_base_path>/<version>`` directory.

    Yields:
        The ``predict_log.request`` of each ``PredictionLog`` record in
        ``assets.extra/tf_serving_warmup_requests``; nothing if the file is
        absent. Non-Predict logs are skipped with a warning since this server
        does not implement Classify/Regress/MultiInference.
    """
    path = os.path.join(version_dir, WARMUP_RELATIVE_PATH)
    if not tf.io.gfile.exists(path):
        return
    for index, record in enumerate(tf.data.TFRecordDataset(path).as_numpy_iterator()):
        if index >= MAX_WARMUP_RECORDS:
            logger.warning("%s: only the first %d warmup records are replayed", path, MAX_WARMUP_RECORDS)
            return
        log = prediction_log_pb2.PredictionLog.FromString(record)
        if log.WhichOneof("log_type") != "predict_log":
            logger.warning("%s: skipping warmup record %d of type %s", path, index, log.WhichOneof("log_type"))
            continue
        yield log.predict_log.request


def load_servable_version(
    model_name: str, version: int, version_dir: str, warmup: WarmupFn | None = None
) -> ServableVersion:
    """Loads one version and replays its warmup requests.

    Args:
        model_name: Model name clients use.
        version: Integer version.
        version_dir: Directory of that version.
        warmup: Called with the new servable and each warmup request; it must
            run the same code path as Predict. Any exception fails the load, as
            in TF Serving.

    Returns:
        The loaded and warmed-up version.
    """
    start = time.monotonic()
    # Parse the proto first: a corrupt file fails fast with a clear error.
    signature_defs = read_signature_defs(version_dir)
    loaded = tf.saved_model.load(version_dir)
    servable = ServableVersion(
        model_name=model_name,
        version=version,
        path=version_dir,
        loaded=loaded,
        signatures={key: fn for key, fn in loaded.signatures.items() if key != INIT_OP_SIGNATURE_KEY},
        signature_defs=signature_defs,
        load_seconds=time.monotonic() - start,
    )
    if warmup is None:
        return servable
    start = time.monotonic()
    count = 0
    for request in read_warmup_requests(version_dir):
        warmup(servable, request)
        count += 1
    return dataclasses.replace(servable, warmup_seconds=time.monotonic() - start, warmup_requests=count)


class ServableVersions:
    """Loads the versions of one model that its version policy asks for.

    ``poll_once`` scans the base path and applies TF Serving's version
    policies: ``latest {num_versions: N}`` (the default, N=1), ``all`` and
    ``specific {versions: ...}``. New versions are loaded and warmed up off the
    request path and only then published, so requests never see a half-loaded
    model; versions the policy no longer wants are unloaded after that, and
    only if some wanted version is available (availability first: the model
    never goes from serving to nothing because of a bad push). A version that
    fails to load is remembered with its files' fingerprint and retried only
    when its files change; under ``latest`` the next older version takes its
    place.
    """

    def __init__(
        self,
        model_name: str,
        base_path: str,
        policy: VersionPolicy | None = None,
        warmup: WarmupFn | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        """Initialises the loader; nothing is loaded until `poll_once`.

        Args:
            model_name: Model name clients use in ``ModelSpec.name``.
            base_path: Directory holding the integer version subdirectories.
            policy: Which versions to serve; None means ``latest {1}``.
            warmup: Callable replaying one warmup request (see
                `load_servable_version`).
            on_change: Called after versions were loaded or unloaded.
        """
        self.model_name = model_name
        self.base_path = base_path
        self.policy = policy if policy is not None else VersionPolicy()
        self._warmup = warmup
        self._on_change = on_change
        # _lock guards the published state; _poll_lock serialises polls (the
        # poller thread and a config reload may both poll).
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._loaded: dict[int, ServableVersion] = {}
        self._states: dict[int, VersionState] = {}
        self._failed: dict[int, tuple[tuple[str, int, int], ...]] = {}

    def reconfigure(self, base_path: str, policy: VersionPolicy) -> None:
        """Changes the base path and policy; the next `poll_once` applies them."""
        with self._poll_lock:
            self.base_path = base_path
            self.policy = policy

    def get(self, version: int | None = None) -> ServableVersion:
        """Returns a loaded version.

        Args:
            version: Requested version, or None for the highest loaded one.

        Returns:
            The loaded version.

        Raises:
            NoServableVersionError: If no version is loaded.
            VersionNotFoundError: If ``version`` is not loaded.
        """
        with self._lock:
            loaded = dict(self._loaded)
        if not loaded:
            raise NoServableVersionError(
                f"model {self.model_name!r} has no loaded version yet (waiting for "
                f"<version>/saved_model.pb under {self.base_path})"
            )
        if version is None:
            return loaded[max(loaded)]
        if version not in loaded:
            raise VersionNotFoundError(
                f"model {self.model_name!r} version {version} is not loaded; available versions: {sorted(loaded)}"
            )
        return loaded[version]

    def available(self) -> list[int]:
        """Returns the loaded (AVAILABLE) versions, ascending."""
        with self._lock:
            return sorted(self._loaded)

    def states(self) -> list[VersionState]:
        """Returns every version seen (loading, serving, unloaded, failed), newest first."""
        with self._lock:
            return sorted(self._states.values(), key=lambda s: s.version, reverse=True)

    def poll_once(self) -> None:
        """Scans the base path once and loads/unloads versions per the policy."""
        with self._poll_lock:
            on_disk = scan_versions(self.base_path)
            choice = self.policy.WhichOneof("policy_choice")
            wanted: list[int] = []
            if choice in (None, "latest"):
                count = max(1, self.policy.latest.num_versions) if choice else 1
                for version in sorted(on_disk, reverse=True):
                    if len(wanted) == count:
                        break
                    if self._ensure_loaded(version, on_disk[version]):
                        wanted.append(version)
            else:
                targets = sorted(on_disk) if choice == "all" else sorted(set(self.policy.specific.versions))
                wanted = [v for v in targets if v in on_disk and self._ensure_loaded(v, on_disk[v])]
            self._unload_all_but(set(wanted))

    def unload_all(self) -> None:
        """Unloads every version (the model was removed from the config)."""
        with self._poll_lock:
            self._unload(sorted(self.available()))

    def _ensure_loaded(self, version: int, version_dir: str) -> bool:
        """Returns True once ``version`` from ``version_dir`` is loaded."""
        with self._lock:
            current = self._loaded.get(version)
        if current is not None and current.path == version_dir:
            return True
        fingerprint = self._fingerprint(version_dir)
        if self._failed.get(version) == fingerprint:
            return False
        return self._try_load(version, version_dir, fingerprint)

    def _unload_all_but(self, wanted: set[int]) -> None:
        with self._lock:
            loaded = set(self._loaded)
        if not loaded & wanted:
            return  # nothing wanted is available: keep serving what we have
        self._unload(sorted(loaded - wanted))

    def _unload(self, versions: list[int]) -> None:
        if not versions:
            return
        with self._lock:
            for version in versions:
                # In-flight requests still hold a reference; TF frees it after them.
                self._loaded.pop(version, None)
                self._states[version] = VersionState(version, _STATE.END)
        for version in versions:
            logger.info("Unloaded model %s version %d", self.model_name, version)
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    @staticmethod
    def _fingerprint(version_dir: str) -> tuple[tuple[str, int, int], ...]:
        """Sizes and mtimes of every file of a version (a SavedModel has few).

        A version copied non-atomically can fail while its variables are still
        arriving; any change under its directory makes it eligible again.
        """
        entries = []
        try:
            for root, _dirs, files in tf.io.gfile.walk(version_dir):
                for name in files:
                    path = os.path.join(root, name)
                    stat = tf.io.gfile.stat(path)
                    entries.append((os.path.relpath(path, version_dir), stat.length, stat.mtime_nsec))
        except tf.errors.NotFoundError:
            pass  # removed while scanning; the next poll sees the new state
        return tuple(sorted(entries))

    def _try_load(self, version: int, version_dir: str, fingerprint: tuple[tuple[str, int, int], ...]) -> bool:
        with self._lock:
            self._states[version] = VersionState(version, _STATE.LOADING)
        try:
            servable = load_servable_version(self.model_name, version, version_dir, self._warmup)
        except Exception as exc:  # noqa: BLE001 - any load failure must keep the old version serving
            message = f"{type(exc).__name__}: {exc}"
            logger.error(
                "Failed to load model %s version %d from %s: %s", self.model_name, version, version_dir, message
            )
            self._failed[version] = fingerprint
            with self._lock:
                self._states[version] = VersionState(version, _STATE.END, error=message)
            return False
        self._failed.pop(version, None)
        with self._lock:
            self._loaded[version] = servable
            self._states[version] = VersionState(version, _STATE.AVAILABLE)
        logger.info(
            "Loaded model %s version %d from %s in %.2fs; warmup: %d request(s) in %.2fs",
            self.model_name,
            version,
            version_dir,
            servable.load_seconds,
            servable.warmup_requests,
            servable.warmup_seconds,
        )
        self._changed()
        return True
