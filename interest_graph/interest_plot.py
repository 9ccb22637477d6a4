"""Draws how a user's interest graph moves as events arrive."""

from __future__ import annotations

from collections.abc import Sequence

from serving.client import InterestGraph


def plot_interest_timeline(
    steps: Sequence[tuple[str, InterestGraph]], path: str, title: str, max_categories: int = 8
) -> None:
    """A heat map: categories (rows) by event (columns), colour = category weight.

    Args:
      steps: (label of the event just recorded, the interest graph after it).
      path: the PNG to write.
      title: the picture's title.
      max_categories: rows shown (the categories with the largest total weight).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    totals: dict[str, float] = {}
    for _, graph in steps:
        for name, weight in graph.categories:
            totals[name] = totals.get(name, 0.0) + weight
    rows = sorted(totals, key=lambda c: -totals[c])[:max_categories]
    grid = np.array([[dict(graph.categories).get(c, 0.0) for _, graph in steps] for c in rows])
    fig, ax = plt.subplots(figsize=(1.1 * len(steps) + 3, 0.45 * len(rows) + 2.6))
    image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0.0)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xticks(range(len(steps)), [label for label, _ in steps], rotation=40, ha="right", fontsize=8)
    for (r, c), value in np.ndenumerate(grid):
        if value >= 0.05:
            ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value < 0.5 else "k")
    ax.set_xlabel("after each new event (item, rating); blank: not among the state's top categories")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="category weight in the interest state")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
