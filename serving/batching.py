"""Server-side request batching with TF Serving's ``BatchingParameters``.

Concurrent Predict requests for the same version and signature whose inputs are
compatible are concatenated along the batch dimension (dimension 0), run as
one call, and the outputs are split back per request. Compatible means: the
same non-batch shape for every batched input, and equal values for the inputs
that have no batch dimension (the toy ``top`` signature's scalar ``k``), so
requests with different scalars go to different batches.

With ``pad_variable_length_inputs`` (TF Serving's batching_session) the
non-batch shapes only need the same rank: each request's input is padded at
the end of every non-batch dimension to the largest size in the batch, so
``recommend`` requests with different numbers of ``exclude_item_ids`` share a
batch. As in TF Serving, outputs are split by rows but not un-padded: an output
whose width follows a padded input comes back as wide as the batch's widest.
Padding is only harmless where a repeated element changes nothing (a set of
ids) or the model knows each row's true length; TF Serving assumes the same.

Scheduling follows TF Serving's basic batch scheduler: each batching key has a
queue of batches; a batch is run when it is full or when its oldest request
has waited ``batch_timeout_micros`` and a batch thread is free. While all
``num_batch_threads`` threads are busy, new requests pile into the open batch,
which is where merging comes from under load even with a zero timeout.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

import grpc
import numpy as np

from serving.config_protos import BatchingParameters, parse_text_file
from serving.errors import ServingError
from serving.predict import Arrays, Executor, Signature, run_signature

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """Batch scheduler settings; defaults are TF Serving's.

    Attributes:
        max_batch_size: Most rows in one batch; a larger request is rejected.
        batch_timeout_micros: Longest a request waits for others to join.
        max_enqueued_batches: Most batches waiting per key before requests are
            refused with UNAVAILABLE.
        num_batch_threads: Threads running batches.
        allowed_batch_sizes: If set, a batch is padded up to the next of these
            sizes (increasing, the last equal to ``max_batch_size``).
        pad_variable_length_inputs: Merge requests whose batched inputs differ
            in non-batch dimension sizes by padding them (see the module doc).
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    @classmethod
    def from_proto(cls, params: Any) -> BatchingOptions:
        """Reads a ``BatchingParameters`` message; unset fields keep the defaults.

        Args:
            params: A `serving.config_protos.BatchingParameters`.

        Returns:
            The options.

        Raises:
            ValueError: If a value is out of range or ``allowed_batch_sizes``
                breaks TF Serving's rules.
        """
        defaults = cls()
        values = {
            name: getattr(params, name).value if params.HasField(name) else getattr(defaults, name)
            for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")
        }
        options = cls(
            allowed_batch_sizes=tuple(params.allowed_batch_sizes),
            pad_variable_length_inputs=params.pad_variable_length_inputs,
            **values,
        )
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(options, name) < 1:
                raise ValueError(f"batching parameter {name} must be >= 1, got {getattr(options, name)}")
        if options.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {options.batch_timeout_micros}")
        sizes = options.allowed_batch_sizes
        if sizes and (list(sizes) != sorted(set(sizes)) or sizes[0] < 1 or sizes[-1] != options.max_batch_size):
            raise ValueError(
                f"allowed_batch_sizes {list(sizes)} must be increasing and end with max_batch_size "
                f"{options.max_batch_size}"
            )
        return options


def load_batching_options(path: str | None) -> BatchingOptions:
    """Reads ``--batching_parameters_file`` (TF Serving's text format); None gives defaults."""
    return BatchingOptions() if path is None else BatchingOptions.from_proto(parse_text_file(path, BatchingParameters))


@dataclasses.dataclass
class _Task:
    signature: Signature
    inputs: Arrays
    rows: int
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    outputs: Arrays | None = None
    error: ServingError | None = None


@dataclasses.dataclass
class _Batch:
    key: Hashable
    created: float
    tasks: list[_Task] = dataclasses.field(default_factory=list)
    rows: int = 0


class Batcher:
    """Merges concurrent compatible requests into one signature call."""

    def __init__(
        self,
        options: BatchingOptions,
        execute: Executor = run_signature,
        on_batch: Callable[[Signature, int, int], None] | None = None,
    ) -> None:
        """Starts the batch threads.

        Args:
            options: Scheduler settings.
            execute: Runs one (merged) call.
            on_batch: Called after each run with the signature, the number of
                requests and the number of rows (for metrics).
        """
        self.options = options
        self._execute = execute
        self._on_batch = on_batch
        self._cond = threading.Condition()
        self._queues: dict[Hashable, collections.deque[_Batch]] = {}
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
            for i in range(options.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def run(self, signature: Signature, inputs: Arrays) -> Arrays:
        """Runs a request, batched with others when the signature allows it.

        This is an `serving.predict.Executor`.

        Args:
            signature: The signature.
            inputs: The request's decoded inputs.

        Returns:
            This request's outputs.

        Raises:
            ServingError: INVALID_ARGUMENT for too many rows or batch inputs of
                different sizes; UNAVAILABLE when the queue is full or the
                server is stopping; the call's own error otherwise.
        """
        if not signature.batchable:
            return self._execute(signature, inputs)
        rows = {inputs[name].shape[0] for name in signature.batch_inputs}
        if len(rows) != 1:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"batched inputs {signature.batch_inputs} must have equal 0th-dimension size, got {sorted(rows)}",
            )
        task = _Task(signature, inputs, rows.pop())
        if task.rows > self.options.max_batch_size:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Task size {task.rows} is larger than maximum input batch size {self.options.max_batch_size}",
            )
        self._enqueue(task)
        task.done.wait()
        if task.error is not None:
            raise task.error
        assert task.outputs is not None
        return task.outputs

    def stop(self) -> None:
        """Runs what is queued, then stops the threads; later requests get UNAVAILABLE."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()

    def _key(self, task: _Task) -> Hashable:
        signature = task.signature
        batched = set(signature.batch_inputs)
        parts: list[Hashable] = [id(signature.servable), signature.servable.version, signature.name]
        for name in sorted(task.inputs):
            array = task.inputs[name]
            if name in batched:
                # With padding, only the rank must match: the sizes are evened out in _merge.
                parts.append((name, array.ndim if self.options.pad_variable_length_inputs else array.shape[1:]))
            else:
                parts.append((name, array.shape, tuple(array.ravel().tolist())))
        return tuple(parts)

    def _enqueue(self, task: _Task) -> None:
        key = self._key(task)
        with self._cond:
            if self._stopping:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            queue = self._queues.setdefault(key, collections.deque())
            if queue and queue[-1].rows + task.rows <= self.options.max_batch_size:
                batch = queue[-1]
            else:
                if len(queue) >= self.options.max_enqueued_batches:
                    raise ServingError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"The batch scheduling queue for signature {task.signature.name!r} is full "
                        f"({self.options.max_enqueued_batches} batches waiting); retry later",
                    )
                batch = _Batch(key, time.monotonic())
                queue.append(batch)
            batch.tasks.append(task)
            batch.rows += task.rows
            self._cond.notify()

    def _take_ready(self) -> tuple[_Batch | None, float | None]:
        """Pops the oldest batch that may run now; else returns when one will be ready."""
        now = time.monotonic()
        timeout = self.options.batch_timeout_micros / 1e6
        ready: _Batch | None = None
        next_due: float | None = None
        for queue in self._queues.values():
            batch = queue[0]
            due = batch.created + timeout
            if self._stopping or batch.rows >= self.options.max_batch_size or due <= now:
                if ready is None or batch.created < ready.created:
                    ready = batch
            elif next_due is None or due < next_due:
                next_due = due
        if ready is not None:
            queue = self._queues[ready.key]
            queue.popleft()
            if not queue:
                del self._queues[ready.key]
        return ready, next_due

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    batch, next_due = self._take_ready()
                    if batch is not None:
                        break
                    if self._stopping and not self._queues:
                        return
                    self._cond.wait(None if next_due is None else max(0.0, next_due - time.monotonic()))
            self._run_batch(batch)

    def _padded_rows(self, rows: int) -> int:
        for size in self.options.allowed_batch_sizes:
            if size >= rows:
                return size
        return rows

    def _run_batch(self, batch: _Batch) -> None:
        tasks = batch.tasks
        signature = tasks[0].signature
        try:
            outputs = self._execute(signature, self._merge(tasks))
            self._split(tasks, outputs)
        except ServingError as exc:
            if len(tasks) == 1:
                tasks[0].error = exc
            else:
                # One request's bad values must not fail the others merged with
                # it: rerun each alone so every request gets its own answer.
                for task in tasks:
                    self._run_alone(task)
        except Exception as exc:  # noqa: BLE001 - a batch thread must survive and answer every waiter
            logger.exception("batch of %d request(s) failed", len(tasks))
            for task in tasks:
                task.error = ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        finally:
            for task in tasks:
                task.done.set()
        if self._on_batch is not None:
            self._on_batch(signature, len(tasks), batch.rows)

    def _run_alone(self, task: _Task) -> None:
        try:
            task.outputs = self._execute(task.signature, task.inputs)
        except ServingError as exc:
            task.error = exc

    def _merge(self, tasks: list[_Task]) -> Arrays:
        first = tasks[0]
        batched = set(first.signature.batch_inputs)
        total = sum(task.rows for task in tasks)
        pad = self._padded_rows(total) - total
        merged = {}
        for name, array in first.inputs.items():
            if name not in batched:
                merged[name] = array
                continue
            parts = [task.inputs[name] for task in tasks]
            if self.options.pad_variable_length_inputs:
                widest = tuple(max(sizes) for sizes in zip(*(part.shape[1:] for part in parts), strict=True))
                parts = [_pad_non_batch_dims(part, widest, name) for part in parts]
            if pad:
                # TF Serving pads with copies of the first row; the padded rows' outputs are dropped.
                parts.append(np.repeat(parts[0][:1], pad, axis=0))
            merged[name] = np.concatenate(parts, axis=0)
        return merged

    def _split(self, tasks: list[_Task], outputs: Arrays) -> None:
        total = self._padded_rows(sum(task.rows for task in tasks))
        for name, value in outputs.items():
            if value.ndim == 0 or value.shape[0] != total:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"batched output {name!r} has shape {list(value.shape)}, expected {total} rows; "
                    "this signature cannot be batched",
                )
        offset = 0
        for task in tasks:
            task.outputs = {name: value[offset : offset + task.rows] for name, value in outputs.items()}
            offset += task.rows


def _pad_non_batch_dims(array: np.ndarray, sizes: tuple[int, ...], name: str) -> np.ndarray:
    """Pads ``array`` at the end of its non-batch dimensions up to ``sizes``.

    Like TF Serving's ``AddPadding`` (batching_util), the pad value is an
    element already in the input, so it is a valid value for any dtype and,
    for set-like inputs such as ``exclude_item_ids``, a duplicate that changes
    nothing. TF Serving takes the whole tensor's first element; we take each
    row's own first element instead, which is the same for one-row requests
    but, for several rows, keeps row 0's value (e.g. an excluded item) out of
    the other rows.

    Raises:
        ServingError: INVALID_ARGUMENT if padding is needed but the input has
            no elements to pad with (TF Serving refuses too); the batch then
            runs each request alone.
    """
    if array.shape[1:] == sizes:
        return array
    if array.size == 0:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"cannot pad empty input {name!r} to {list(sizes)}")
    rows = array.shape[0]
    firsts = array.reshape(rows, -1)[:, 0].reshape((rows,) + (1,) * len(sizes))
    padded = np.broadcast_to(firsts, (rows, *sizes)).copy()
    padded[tuple(slice(0, size) for size in array.shape)] = array
    return padded
