"""Session fixtures built once per test run, shared by the pytest-xdist workers.

`make test` runs two workers, each with its own session. A fixture that trains
a model would otherwise train it once per worker; here the first worker to ask
builds it under the run's shared temporary directory while holding a lock, and
the others wait for it and read what it wrote.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

_DONE = "built.json"


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], dict[str, Any]]
) -> dict[str, Any]:
    """What `build(directory)` returned, from the first worker that built it.

    Args:
      tmp_path_factory: pytest's factory; under xdist the parent of its base
        directory is shared by the workers of one run.
      name: the fixture's directory name within the run.
      build: writes the fixture into the directory it is given and returns a
        JSON-serialisable description of it (paths, numbers).

    Returns:
      The description, as `build` returned it.
    """
    base = tmp_path_factory.getbasetemp()
    # An xdist worker (PYTEST_XDIST_WORKER set) has a base of its own inside the run's; alone, the base is the run's.
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    directory = root / f"built-{name}"
    with open(root / f"built-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = directory / _DONE
        if done.exists():
            return json.loads(done.read_text())
        directory.mkdir(exist_ok=True)
        result = build(directory)
        done.write_text(json.dumps(result))
        return result
