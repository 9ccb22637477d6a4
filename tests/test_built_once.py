"""`built_once`: a session fixture is built by the first caller and read back by the rest."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.built_once import built_once


def test_the_second_caller_reads_what_the_first_built(tmp_path_factory: pytest.TempPathFactory) -> None:
    builds: list[Path] = []

    def build(directory: Path) -> dict:
        builds.append(directory)
        (directory / "model").write_text("weights")
        return {"model": str(directory / "model")}

    name = f"probe-{uuid.uuid4().hex[:8]}"
    first = built_once(tmp_path_factory, name, build)
    second = built_once(tmp_path_factory, name, build)
    assert second == first and len(builds) == 1
    assert Path(first["model"]).read_text() == "weights"
