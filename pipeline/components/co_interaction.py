"""Item <-> item co-interaction neighbours, from training events only.

Two items are co-interacted when one user touched both within a few events of
each other. Each item keeps its `top_n` strongest neighbours, scored by cosine
of the co-interaction counts,

    s(i, j) = C[i, j] / sqrt(n_i * n_j),

so a blockbuster is not everyone's neighbour. The served score reads these
edges from the user's latest items (`trainer.co_interaction_channel`), and the
model can also pass messages along them (`trainer.item_tower.ItemTower`, off
by default). Built from the training split only, so no validation or test
interaction shapes the graph.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence

# Chosen for the co-interaction channel (trainer/co_interaction_channel.py) on
# MovieLens-100k validation, scoring one trained model: pairs up to 20 events
# apart, 100 neighbours per item (validation NDCG@10 0.1402; 3 apart / 50
# neighbours 0.1281, 20 / 20 0.1343, 20 / all 0.1403).
DEFAULT_NEIGHBOURHOOD = 20
DEFAULT_TOP_N = 100


def co_interaction_pairs(item_sequence: Sequence[str], neighbourhood: int = DEFAULT_NEIGHBOURHOOD) -> Iterator[str]:
    """Unordered item pairs at most `neighbourhood` positions apart in one user's history.

    Args:
      item_sequence: the user's training items, oldest first.
      neighbourhood: the largest distance (in events) that counts.

    Returns:
      One key "a\\tb" (a < b) per co-interaction; a pair of equal items is
      skipped.
    """
    for i, a in enumerate(item_sequence):
        for b in item_sequence[i + 1 : i + 1 + neighbourhood]:
            if a != b:
                yield f"{min(a, b)}\t{max(a, b)}"


def top_neighbours(
    pair_counts: Iterable[tuple[str, int]], item_counts: Mapping[str, int], top_n: int = DEFAULT_TOP_N
) -> dict[str, tuple[tuple[str, float], ...]]:
    """Each item's strongest co-interaction neighbours.

    Args:
      pair_counts: ("a\\tb", count) from `co_interaction_pairs`.
      item_counts: training interactions per item.
      top_n: neighbours kept per item.

    Returns:
      item_id -> ((neighbour_id, cosine), ...), strongest first (ties by id).
    """
    scored: dict[str, list[tuple[float, str]]] = {}
    for key, count in pair_counts:
        a, b = key.split("\t")
        score = count / math.sqrt(max(item_counts.get(a, 0), 1) * max(item_counts.get(b, 0), 1))
        scored.setdefault(a, []).append((score, b))
        scored.setdefault(b, []).append((score, a))
    strongest = {item: sorted(pairs, key=lambda p: (-p[0], p[1]))[:top_n] for item, pairs in scored.items()}
    return {item: tuple((other, round(score, 6)) for score, other in pairs) for item, pairs in strongest.items()}


def neighbours_of_histories(
    histories: Iterable[Sequence[str]],
    neighbourhood: int = DEFAULT_NEIGHBOURHOOD,
    top_n: int = DEFAULT_TOP_N,
) -> dict[str, tuple[tuple[str, float], ...]]:
    """`top_neighbours` of in-memory training histories (one item sequence per user)."""
    pairs: Counter[str] = Counter()
    items: Counter[str] = Counter()
    for sequence in histories:
        items.update(sequence)
        pairs.update(co_interaction_pairs(sequence, neighbourhood))
    return top_neighbours(pairs.items(), items, top_n)
