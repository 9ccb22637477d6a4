"""The quality benchmark's split, baselines and results file, on small synthetic data."""

from __future__ import annotations

import gc
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from bench.quality import ModelSpec, Recommender, item_cooccurrence
from bench.quality import harness as h
from bench.quality.data import build_split
from bench.quality.interest_model import point_subgraph
from bench.quality.item_cooccurrence import ItemCooccurrence
from bench.quality.popularity import Popularity
from bench.quality.sasrec import SASRec, training_windows
from pipeline.components.graph_builder import split_user_history
from schemas import graph as g
from schemas.events import Event
from trainer.metrics import ranking_metrics

SMALL_SASREC = {"hidden": 32, "blocks": 1, "dropout": 0.0, "lr": 1e-2, "batch_size": 64, "max_epochs": 3}


def _event(user: str, item: str, t: int, k: int) -> Event:
    return Event(user, item, "rating", t, 3.0, "", f"{user}-e{k:03d}")


def _tied_user() -> list[Event]:
    # i1/i2 share t=200 and the validation and test events share t=500.
    times = [100, 200, 200, 300, 400, 500, 500]
    return [_event("u", f"i{k}", t, k) for k, t in enumerate(times)]


def _window_items(example: tf.train.Example) -> list[str]:
    features = example.features.feature
    nodes = [v.decode() for v in features[f"nodes/{g.ITEM}.{g.ITEM_ID}"].bytes_list.value]
    return [nodes[s] for s in features[f"edges/{g.EVENT}.#source"].int64_list.value]


def test_split_matches_the_pipeline_graph_builder() -> None:
    events = _tied_user()
    pipeline = [
        (split, tf.train.Example.FromString(data))
        for split, data in split_user_history("u", list(reversed(events)), 3, {})
    ]
    split = build_split(reversed(events), window=3)
    by_split: dict[str, list[tf.train.Example]] = {}
    for name, example in pipeline:
        by_split.setdefault(name, []).append(example)
    (eval_point,), (test_point,) = split.eval_points, split.test_points
    for point, (example,) in ((eval_point, by_split["eval"]), (test_point, by_split["test"])):
        features = example.features.feature
        assert point.target_item == features[g.LABEL_ITEM_ID].bytes_list.value[0].decode()
        assert sorted(point.exclude) == sorted(v.decode() for v in features[g.SEEN_ITEM_IDS].bytes_list.value)
        assert [e.item_id for e in point.window] == _window_items(example)
        # The adapter ranks the subgraph the pipeline wrote, long-term memory included.
        subgraph = point_subgraph(point, split.window, {}).features.feature
        assert set(subgraph) <= set(features)
        for key, value in subgraph.items():
            assert features[key] == value, key
    assert [
        v.decode()
        for v in point_subgraph(test_point, 3, {}).features.feature[f"nodes/{g.MEMORY}.{g.ITEM_ID}"].bytes_list.value
    ] == ["i0", "i1"]
    without_memory = point_subgraph(test_point, 3, {}, remember=False).features.feature
    assert not without_memory[f"nodes/{g.MEMORY}.{g.ITEM_ID}"].bytes_list.value
    # Training events: everything but the last two; the pipeline's training points are
    # those with a non-empty window, with the same windows.
    assert [e.item_id for e in split.train["u"]] == ["i0", "i1", "i2", "i3", "i4"]
    train_points = list(split.train_points())
    assert [p.target_item for p in train_points] == [
        ex.features.feature[g.LABEL_ITEM_ID].bytes_list.value[0].decode() for ex in by_split["train"]
    ]
    assert [[e.item_id for e in p.window] for p in train_points] == [_window_items(ex) for ex in by_split["train"]]
    # The tie: i5 (validation) is excluded for the test point but not in its input.
    assert test_point.target_item == "i6" and "i5" in test_point.exclude
    assert [e.item_id for e in test_point.window] == ["i2", "i3", "i4"]
    assert split.tie_stats()["test_points_with_tied_earlier_events"] == 1
    assert split.train_item_counts == {f"i{k}": 1 for k in range(5)}
    assert split.cold_items(1) == {"i5", "i6"}


def _cooccurrence_split():
    """a and b always occur together; z is the most popular item overall."""
    events, k = [], 0
    for u in range(30):
        user = f"u{u:02d}"
        items = ["z", f"x{u}", "a", "b", f"y{u}"] if u % 2 else ["z", f"x{u}", "b", "a", f"y{u}"]
        items += ["z2", "z3"] if u < 25 else []
        for t, item in enumerate(items):
            events.append(_event(user, item, 1000 + t, k))
            k += 1
    # The probe user watched a and then z; its validation/test items are new.
    for t, item in enumerate(["z", "a", "q1", "q2"]):
        events.append(_event("probe", item, 1000 + t, k))
        k += 1
    return build_split(events, window=10)


def test_item_cooccurrence_recommends_the_co_occurring_item() -> None:
    split = _cooccurrence_split()
    model = ItemCooccurrence({"neighbourhood": None, "half_life": None, "alpha": 0.5})
    model.fit(split, seed=0)
    probe = next(p for p in split.eval_points if p.user_id == "probe")
    assert [e.item_id for e in probe.window] == ["z", "a"]
    ranked = model.rank([probe], k=5)[0]
    assert ranked[0] == "b"
    assert "a" not in ranked and "z" not in ranked
    assert model.params > 0


def _exclusion_models() -> list[Recommender]:
    return [
        Popularity(),
        ItemCooccurrence({"neighbourhood": 2, "half_life": 1, "alpha": 1.0}),
        SASRec({**SMALL_SASREC, "max_epochs": 1}),
    ]


def test_every_recommender_respects_exclusions() -> None:
    split = _cooccurrence_split()
    points = split.eval_points + split.test_points
    popular = Popularity()
    popular.fit(split, 0)
    assert popular.rank([split.test_points[0]], 1)[0] != ["z"]  # z is the top item but was seen
    for model in _exclusion_models():
        model.fit(split, seed=0)
        rankings = model.rank(points, k=20)
        for point, ranked in zip(points, rankings, strict=True):
            assert not point.exclude.intersection(ranked), type(model).__name__
            assert len(ranked) == min(20, len(set(split.item_ids) - point.exclude))
            assert len(set(ranked)) == len(ranked)


def test_training_windows_put_every_target_in_the_loss_once() -> None:
    seq = list(range(1, 24))  # 22 targets
    x, y, m = training_windows([seq, [5, 6]], max_len=8, stride=4)
    targets = y[m > 0]
    assert sorted(targets.tolist()) == sorted(list(range(2, 24)) + [6])
    # Every input predicts its successor, padding is on the left.
    assert ((y[x > 0] - x[x > 0]) == 1).all()
    assert (x[:, -1] > 0).all() and (x[-1, :-1] == 0).all()
    # A target in the loss sees at least max_len - stride + 1 inputs (or all there are):
    # in the first sequence, input value v is the v-th item.
    x, _, m = training_windows([seq], max_len=8, stride=4)
    for row_x, row_m in zip(x, m, strict=True):
        for p in np.flatnonzero(row_m):
            assert (row_x[: p + 1] > 0).sum() >= min(8 - 4 + 1, row_x[p])


def _cycle_split(n_items: int = 20, users: int = 200, length: int = 6):
    rng = np.random.default_rng(7)
    cycle = [f"c{i:02d}" for i in rng.permutation(n_items)]
    events, k = [], 0
    for u in range(users):
        start = int(rng.integers(n_items))
        for t in range(length):
            events.append(_event(f"u{u:03d}", cycle[(start + t) % n_items], 10 * t + 1, k))
            k += 1
    return build_split(events, window=5)


def test_sasrec_learns_a_deterministic_successor() -> None:
    split = _cycle_split()
    model = SASRec({**SMALL_SASREC, "max_epochs": 40, "patience": 5})
    info = model.fit(split, seed=0)
    rankings = model.rank(split.test_points, k=10)
    targets = [[p.target_item] for p in split.test_points]
    metrics = ranking_metrics(rankings, targets)
    top1 = np.mean([r[0] == t[0] for r, t in zip(rankings, targets, strict=True)])
    assert metrics["hr@10"] > 0.9
    assert top1 > 0.8, top1  # 15 candidates remain, so chance is 1/15
    assert info.best_epoch is not None and info.epochs is not None and info.best_epoch <= info.epochs
    assert info.params == model.params > 0


def test_harness_writes_the_documented_shape_and_merges(tmp_path, monkeypatch) -> None:
    split = _cooccurrence_split()
    monkeypatch.setitem(h.REGISTRY, "pop", ModelSpec(lambda config: Popularity(config)))
    monkeypatch.setitem(
        h.REGISTRY,
        "cooc",
        ModelSpec(lambda config: ItemCooccurrence(config), grid=[{"half_life": 1}, {"half_life": None}]),
    )
    output = str(tmp_path / "quality.json")
    h.run_benchmark(split, ["pop"], seeds=[0, 1], output=output)
    h.run_benchmark(split, ["cooc"], seeds=[0, 1, 2], output=output)
    with open(output) as f:
        results = json.load(f)
    assert set(results) == {"protocol", "models", "grids", "slices"}
    assert set(results["models"]) == {"pop", "cooc"}
    for name in ("pop", "cooc"):
        entry = results["models"][name]
        for metric in ("hr@10", "ndcg@10", "mrr@10", "recall@20", "ndcg@20"):
            assert set(entry[metric]) == {"mean", "std"}
            assert 0.0 <= entry[metric]["mean"] <= 1.0
            assert set(entry["validation"][metric]) == {"mean", "std"}
        assert entry["train_s"] >= 0 and entry["params"] > 0
        assert results["slices"]["cold_items"]["models"][name]["hr@10"]["mean"] >= 0
    assert results["models"]["pop"]["hr@10"]["std"] == 0.0  # deterministic
    assert len(results["models"]["cooc"]["per_seed"]) == 3
    cooc_grid = results["grids"]["cooc"]
    assert [p["config"] for p in cooc_grid["points"]] == [{"half_life": 1}, {"half_life": None}]
    best = max(cooc_grid["points"], key=lambda p: p["validation"]["ndcg@10"])
    assert cooc_grid["chosen"] == best["config"] == results["models"]["cooc"]["config"]
    assert results["protocol"]["test_points"] == len(split.test_points)
    cold = split.cold_items(5)
    assert results["slices"]["cold_items"]["test_points"] == sum(p.target_item in cold for p in split.test_points)
    # Re-running one model replaces only its own entry.
    before = results["models"]["cooc"]
    h.run_benchmark(split, ["pop"], seeds=[0], output=output)
    with open(output) as f:
        again = json.load(f)
    assert again["models"]["cooc"] == before and again["models"]["pop"]["seeds"] == [0]


class _SeededPopularity(Popularity):
    """Popularity shuffled by the seed, so seeds differ; records the seeds it was fitted with."""

    fitted: list[int] = []

    def fit(self, split, seed):  # type: ignore[no-untyped-def]
        info = super().fit(split, seed)
        self.fitted.append(seed)
        self._ranked = list(np.random.default_rng(seed).permutation(self._ranked))
        return info


def test_harness_adds_seeds_to_an_entry_without_refitting_its_own(tmp_path, monkeypatch) -> None:
    split = _cooccurrence_split()
    fitted: list[int] = []
    monkeypatch.setattr(_SeededPopularity, "fitted", fitted)
    monkeypatch.setitem(h.REGISTRY, "pop", ModelSpec(lambda config: _SeededPopularity(config)))
    output = str(tmp_path / "quality.json")
    with pytest.raises(KeyError, match="no entry for pop"):
        h.run_benchmark(split, ["pop"], seeds=[0, 1], output=output, extend=True)
    h.run_benchmark(split, ["pop"], seeds=[0, 1], output=output, command="first")
    h.run_benchmark(split, ["pop"], seeds=[0, 1, 2, 3], output=output, command="wider", extend=True)
    assert fitted == [0, 1, 2, 3]
    with open(output) as f:
        entry = json.load(f)["models"]["pop"]
    assert entry["seeds"] == [0, 1, 2, 3] and [r["seed"] for r in entry["per_seed"]] == [0, 1, 2, 3]
    assert entry["command"] == "first"
    assert [(a["seeds"], a["command"]) for a in entry["added_seeds"]] == [([2, 3], "wider")]
    # The summary is recomputed over all four seeds, the new ones fitted afresh.
    h.run_benchmark(split, ["pop"], seeds=[0, 1, 2, 3], output=str(tmp_path / "direct.json"))
    with open(tmp_path / "direct.json") as f:
        direct = json.load(f)["models"]["pop"]
    assert direct["per_seed"][0]["test"] != direct["per_seed"][1]["test"]
    for metric in ("ndcg@10", "hr@10"):
        assert entry[metric] == pytest.approx(direct[metric])
        assert entry["validation"][metric] == pytest.approx(direct["validation"][metric])
    # A registered config that no longer matches the entry's is refused.
    monkeypatch.setitem(h.REGISTRY, "pop", ModelSpec(lambda config: _SeededPopularity(config), grid=[{"other": 1}]))
    with pytest.raises(ValueError, match="made with config"):
        h.run_benchmark(split, ["pop"], seeds=[0, 1, 2, 3, 4], output=output, extend=True)


def test_harness_records_each_entrys_settings_and_widens_it_only_while_they_hold(tmp_path, monkeypatch) -> None:
    split = _cooccurrence_split()
    monkeypatch.setitem(h.REGISTRY, "cooc", ModelSpec(lambda config: ItemCooccurrence(config), grid=[{"alpha": 0.3}]))
    output = str(tmp_path / "quality.json")
    h.run_benchmark(split, ["cooc"], seeds=[0], output=output)
    with open(output) as f:
        entry = json.load(f)["models"]["cooc"]
    # The defaults are written down with the override, so the entry says what it measured.
    assert entry["config"] == {"alpha": 0.3}
    assert entry["settings"] == {**item_cooccurrence.DEFAULTS, "alpha": 0.3}
    # A default changed since: the same registered config would now be another experiment.
    monkeypatch.setitem(item_cooccurrence.DEFAULTS, "half_life", 7.0)
    with pytest.raises(ValueError, match=r"other settings.*half_life: None then, 7.0 now"):
        h.run_benchmark(split, ["cooc"], seeds=[0, 1], output=output, extend=True)
    with open(output) as f:
        assert json.load(f)["models"]["cooc"] == entry
    monkeypatch.setitem(item_cooccurrence.DEFAULTS, "half_life", None)
    h.run_benchmark(split, ["cooc"], seeds=[0, 1], output=output, extend=True)
    with open(output) as f:
        widened = json.load(f)["models"]["cooc"]
    assert widened["seeds"] == [0, 1] and widened["settings"] == entry["settings"]


class _ReversiblePopularity(Popularity):
    """Popularity with a scoring variant that ranks the least popular items first."""

    scoring_variants = ("least_popular",)

    def set_scoring_variant(self, name):  # type: ignore[no-untyped-def]
        if not hasattr(self, "_as_fitted"):
            self._as_fitted = list(self._ranked)
        self._ranked = self._as_fitted[::-1] if name == "least_popular" else list(self._as_fitted)


def test_harness_evaluates_scoring_variants_on_the_same_fit(tmp_path, monkeypatch) -> None:
    split = _cooccurrence_split()
    monkeypatch.setitem(h.REGISTRY, "rev", ModelSpec(lambda config: _ReversiblePopularity(config)))
    monkeypatch.setitem(h.REGISTRY, "pop", ModelSpec(lambda config: Popularity(config)))
    output = str(tmp_path / "quality.json")
    h.run_benchmark(split, ["rev", "pop"], seeds=[0, 1], output=output)
    with open(output) as f:
        models = json.load(f)["models"]
    # The model as configured is plain popularity; its variant is measured beside it, not instead.
    assert models["rev"]["ndcg@10"] == models["pop"]["ndcg@10"]
    variant = models["rev"]["variants"]["least_popular"]
    reversed_ranking = _ReversiblePopularity({})
    reversed_ranking.fit(split, 0)
    reversed_ranking.set_scoring_variant("least_popular")
    expected = h.evaluate(reversed_ranking, split.test_points)
    assert variant["ndcg@10"]["mean"] == pytest.approx(expected["ndcg@10"])
    assert variant["ndcg@10"]["mean"] != models["rev"]["ndcg@10"]["mean"]
    assert set(models["rev"]["per_seed"][0]["variants"]["least_popular"]) == {"validation", "test", "cold_items"}
    assert "variants" not in models["pop"]


def test_harness_rejects_unknown_models(tmp_path) -> None:
    with pytest.raises(KeyError, match="unknown model"):
        h.run_benchmark(_cooccurrence_split(), ["nope"], seeds=[0], output=str(tmp_path / "q.json"))


def test_interest_graph_adapter_removes_its_working_directory() -> None:
    from bench.quality.interest_model import InterestGraphModel

    adapter = InterestGraphModel({})
    directory = adapter._dir
    assert os.path.isdir(directory)
    del adapter
    gc.collect()
    assert not os.path.exists(directory)


def test_interest_graph_settings_are_the_whole_trainer_config_less_the_seed() -> None:
    import dataclasses

    from bench.quality.interest_model import InterestGraphModel
    from trainer.config import TrainerConfig

    settings = InterestGraphModel({"use_text": False}).settings
    expected = dataclasses.asdict(TrainerConfig(use_text=False))
    del expected["seed"]
    assert settings == expected and settings["epochs"] == TrainerConfig().epochs
    json.dumps(settings)  # recorded in quality.json as it is


def test_every_registered_interest_graph_entry_is_a_valid_trainer_config() -> None:
    # A misspelt knob in the registry would otherwise surface only when that entry's fit starts.
    from bench.quality.interest_model import InterestGraphModel

    entries = {name: spec for name, spec in h.REGISTRY.items() if name.startswith("interest_graph")}
    assert {"interest_graph_no_event_attention", "interest_graph_no_event_to_event_attention"} <= entries.keys()
    for name, spec in entries.items():
        for point in [*spec.grid, {**spec.grid[0], **spec.quick}]:
            settings = InterestGraphModel(point).settings
            assert {key: settings[key] for key in point} == point, name
