"""Per-point target positions: what a paired comparison of two entries needs.

`quality.json` keeps each fit's metric means. Two entries' means differ by a
few thousandths NDCG@10 where a part of the model is ablated, while one test
set's mean has a standard error near 0.008 (a point scores 0 on most points),
so the means alone cannot tell such entries apart. Both entries are scored on
the same points, though, and a paired test over those points removes what
they share. That test needs, for every fit, where the target landed at every
point: the 1-based position of the target item in the model's top
`MAX_CUTOFF`, or 0 when it is not there. That is all any of the metrics reads
(one target per point), so `point_values` turns positions back into the
per-point metric values through `trainer.metrics.point_metrics` itself.

The positions live beside the results file (`quality.json` ->
`quality.ranks.json`), one base-36 digit per point, a line per fit, and
are keyed by model and seed like the results' `per_seed`. Each split's points
are fingerprinted so that positions from another split cannot be mixed in.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bench.quality.data import PredictionPoint
from trainer.metrics import MAX_CUTOFF, METRIC_NAMES, point_metrics

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
SPLITS = ("validation", "test")
FORMAT = (
    f"per fit (model, seed) and split, one base-36 digit per prediction point in the split's order: the 1-based "
    f"position of the target item in the model's top {MAX_CUTOFF}, 0 when it is not there"
)


def ranks_path(results_path: str) -> str:
    """Where the positions of a results file's fits are kept (`x.json` -> `x.ranks.json`)."""
    root, _ = os.path.splitext(results_path)
    return f"{root}.ranks.json"


def target_positions(rankings: Sequence[Sequence[str]], points: Sequence[PredictionPoint]) -> str:
    """Each point's target position in its ranking (1-based, 0 when absent), encoded one digit per point."""
    positions = []
    for ranked, point in zip(rankings, points, strict=True):
        top = list(ranked[:MAX_CUTOFF])
        positions.append(top.index(point.target_item) + 1 if point.target_item in top else 0)
    return "".join(_DIGITS[p] for p in positions)


def decode(encoded: str) -> np.ndarray:
    """The positions of `target_positions`, as an int array."""
    return np.array([_DIGITS.index(c) for c in encoded], dtype=np.int64)


def _position_table() -> dict[str, np.ndarray]:
    # The metric value of a point whose target sits at each position, from the shared metric code.
    rows = []
    for position in range(MAX_CUTOFF + 1):
        ranked = [f"other-{i}" for i in range(MAX_CUTOFF)]
        if position:
            ranked[position - 1] = "target"
        rows.append(point_metrics(ranked, ["target"]))
    return {name: np.array([row[name] for row in rows]) for name in METRIC_NAMES}


_TABLE = _position_table()


def point_values(positions: np.ndarray, metric: str) -> np.ndarray:
    """Per-point values of `metric` (one of METRIC_NAMES) for the given target positions."""
    return _TABLE[metric][positions]


def points_fingerprint(points: Sequence[PredictionPoint]) -> str:
    """A short hash of the points' identity and order (user, target event), to refuse mismatched positions."""
    digest = hashlib.sha256()
    for point in points:
        digest.update(f"{point.user_id}\t{point.target.event_id}\t{point.target_item}\n".encode())
    return digest.hexdigest()[:16]


def load(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def merge(
    existing: Mapping[str, Any],
    fingerprints: Mapping[str, str],
    name: str,
    fits: Mapping[int, Mapping[str, str]],
    replace: bool,
) -> dict[str, Any]:
    """Puts one model's fits into the positions file.

    Args:
      existing: the file's content (empty when new).
      fingerprints: split name -> `points_fingerprint` of the split the fits were scored on. A file made on
        other points is started afresh rather than mixed with.
      name: the model.
      fits: seed -> split name -> encoded positions.
      replace: drop the model's earlier fits (a fresh run of it) instead of adding to them (added seeds).
    """
    ranks = json.loads(json.dumps(existing)) if existing else {}
    if ranks.get("points") != dict(fingerprints):
        ranks = {}
    ranks["format"] = FORMAT
    ranks["points"] = dict(fingerprints)
    models = ranks.setdefault("models", {})
    kept = {} if replace else models.get(name, {})
    models[name] = dict(
        sorted({**kept, **{str(s): dict(f) for s, f in fits.items()}}.items(), key=lambda kv: int(kv[0]))
    )
    return ranks


def write(path: str, ranks: Mapping[str, Any]) -> None:
    """Writes the file with one fit's split per line, so a diff shows which fits changed."""
    lines = ["{", f'  "format": {json.dumps(ranks["format"])},', f'  "points": {json.dumps(ranks["points"])},']
    lines.append('  "models": {')
    models = list(ranks["models"].items())
    for i, (name, fits) in enumerate(models):
        lines.append(f"    {json.dumps(name)}: {{")
        seeds = list(fits.items())
        for j, (seed, splits) in enumerate(seeds):
            comma = "," if j < len(seeds) - 1 else ""
            lines.append(f"      {json.dumps(seed)}: {json.dumps(splits)}{comma}")
        lines.append("    }" + ("," if i < len(models) - 1 else ""))
    lines += ["  }", "}"]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
