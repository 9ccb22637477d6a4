"""The interest model really learns, and its export is what TF Serving can load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from pipeline.components.ranking_evaluator import evaluate, judge, read_score_offsets
from schemas import signatures as s
from schemas.catalog import read_catalog
from schemas.events import Event
from schemas.graph import MEMORY_TIME_SCALE_DAYS, SECONDS_PER_DAY, encode_interest_subgraph
from schemas.memory import checkpoint_after, interest_request, plan_update
from tests.trainer import synthetic
from trainer.co_interaction_channel import CoInteractionChannel
from trainer.config import TrainerConfig
from trainer.export import WARMUP_FILE, export_serving_model
from trainer.graph_dataset import training_dataset
from trainer.rare_item_boost import rare_item_lift
from trainer.task import _score_offsets, build_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = str(tmp_path_factory.mktemp("synthetic"))
    paths = synthetic.make_dataset(root)
    entries = read_catalog(paths["catalog"])
    config = TrainerConfig(epochs=12, batch_size=64, num_sampled=8, learning_rate=1e-2)
    tf.keras.utils.set_random_seed(1)
    model = build_model(entries, synthetic.random_text_vectors(len(entries)), config)
    model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate))
    train = training_dataset([paths["train"]], config.batch_size, shuffle=True, seed=1)
    model(next(iter(train))[0])
    history = model.fit(train, epochs=config.epochs, verbose=0)
    export_dir = os.path.join(root, "export", "1")
    warmup = [x.numpy() for x in tf.data.TFRecordDataset([paths["eval"]], "GZIP").take(2)]
    export_serving_model(model, export_dir, warmup)
    return {"paths": paths, "model": model, "history": history.history, "export_dir": export_dir}


def test_training_loss_decreases(trained: dict) -> None:
    losses = trained["history"]["loss"]
    # Sampled-softmax losses are noisy from epoch to epoch; the trend must be clearly down.
    assert min(losses[-3:]) < 0.5 * losses[0], losses


def test_learned_model_beats_popularity_on_a_pattern_only_the_graph_reveals(trained: dict) -> None:
    paths = trained["paths"]
    result = evaluate(trained["export_dir"], [paths["test"]], paths["catalog"])
    assert result["model"]["count"] == 240
    # Next item = successor of the last one: the model should nearly always rank it first,
    # while popularity (all items about equally frequent) is close to chance.
    assert result["model"]["mrr@10"] > 0.7, result
    assert result["popularity"]["mrr@10"] < 0.4, result


def test_export_loads_and_runs_with_only_tensorflow_imported(trained: dict) -> None:
    export_dir = trained["export_dir"]
    subgraph = next(iter(tf.data.TFRecordDataset([trained["paths"]["test"]], "GZIP"))).numpy()
    script = textwrap.dedent(
        f"""
        import json, sys
        import tensorflow as tf
        loaded = tf.saved_model.load({export_dir!r})
        update = loaded.signatures["{s.UPDATE_INTEREST}"]
        updated = update({s.SUBGRAPH}=tf.constant([{subgraph!r}, {subgraph!r}]))
        state = updated["{s.INTEREST_STATE}"]
        recent = updated["{s.RECENT_ITEM_IDS}"]
        rec = loaded.signatures["{s.RECOMMEND}"](
            {s.INTEREST_STATE}=state,
            {s.RECENT_ITEM_IDS}=recent,
            {s.EXCLUDE_ITEM_IDS}=tf.constant([["item3", ""], ["", ""]]),
            {s.K}=tf.constant([5, 3], tf.int32),
        )
        everything = loaded.signatures["{s.RECOMMEND}"](
            {s.INTEREST_STATE}=state[:1],
            {s.RECENT_ITEM_IDS}=recent[:1],
            {s.EXCLUDE_ITEM_IDS}=tf.constant([["item0"]]),
            {s.K}=tf.constant([100]),
        )
        score = loaded.signatures["{s.SCORE}"](
            {s.INTEREST_STATE}=state,
            {s.RECENT_ITEM_IDS}=recent,
            {s.ITEM_IDS}=tf.constant([["item3", "nope", "{synthetic.COLD_ITEM}"], ["item3", "item4", "item5"]]),
        )["{s.SCORES}"]
        print(json.dumps({{
            "signatures": sorted(loaded.signatures.keys()),
            "state_shape": state.shape.as_list(),
            "item_weights": updated["{s.INTEREST_ITEM_WEIGHTS}"].numpy().tolist(),
            "items": updated["{s.INTEREST_ITEM_IDS}"].numpy().astype(str).tolist(),
            "category_weights": updated["{s.INTEREST_CATEGORY_WEIGHTS}"].numpy().tolist(),
            "categories": updated["{s.INTEREST_CATEGORIES}"].numpy().astype(str).tolist(),
            "state_dtype": state.dtype.name,
            "rec_items": rec["{s.ITEM_IDS}"].numpy().astype(str).tolist(),
            "rec_scores": rec["{s.SCORES}"].numpy().tolist(),
            "all_items": everything["{s.ITEM_IDS}"].numpy().astype(str).tolist()[0],
            "scores": score.numpy().tolist(),
            "foreign": sorted(m for m in ("tensorflow_gnn", "keras_nlp", "tf_keras", "tensorflow_text")
                              if m in sys.modules),
        }}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd="/")
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["foreign"] == []
    assert r["signatures"] == sorted([s.UPDATE_INTEREST, s.FOLD_INTEREST, s.RECOMMEND, s.SCORE, s.DEFAULT_SIGNATURE])
    assert r["state_shape"] == [2, s.NUM_INTERESTS, s.INTEREST_DIM] and r["state_dtype"] == "float32"
    # The readable interest graph: weights over the window's items and categories, each summing to 1.
    assert len(r["items"][0]) == s.TOP_INTEREST_ITEMS and len(r["categories"][0]) == s.TOP_INTEREST_CATEGORIES
    window_items = [i for i in r["items"][0] if i]
    assert len(window_items) == synthetic.WALK_LENGTH - 1
    assert sum(r["item_weights"][0]) == pytest.approx(1.0, abs=1e-5)
    assert r["item_weights"][0] == sorted(r["item_weights"][0], reverse=True)
    assert sorted(c for c in r["categories"][0] if c) == ["cat0", "cat1", "cat2"]
    assert sum(r["category_weights"][0]) == pytest.approx(1.0, abs=1e-5)
    assert len(r["rec_items"][0]) == 5 and "item3" not in r["rec_items"][0]
    # One k per row: the second row asked for 3, the rest of its row is padding.
    assert all(r["rec_items"][1][:3]) and r["rec_items"][1][3:] == ["", ""]
    assert r["rec_scores"][1][3:] == [float("-inf")] * 2
    assert r["rec_scores"][0] == sorted(r["rec_scores"][0], reverse=True)
    # k larger than the catalog: every item except the excluded one, then padding; the
    # cold item (catalog only, no events) is rankable from its text and category.
    expected = [f"item{i}" for i in range(1, synthetic.NUM_ITEMS)] + [synthetic.COLD_ITEM]
    assert sorted(i for i in r["all_items"] if i) == sorted(expected)
    assert r["scores"][0][1] == float("-inf")
    assert np.isfinite(r["scores"][0][2])
    assert r["scores"][0][0] == pytest.approx(r["scores"][1][0], rel=1e-5)
    assert os.path.getsize(os.path.join(export_dir, WARMUP_FILE)) > 0


def test_the_served_score_adds_the_co_interaction_channel_of_the_recent_items(trained: dict, tmp_path) -> None:
    model = trained["model"]
    neighbours = {"item1": (("item2", 1.0), ("item3", 0.5)), "item2": (("item3", 1.0),)}
    export_dir = str(tmp_path / "channel")
    warmup = [x.numpy() for x in tf.data.TFRecordDataset([trained["paths"]["eval"]], "GZIP").take(2)]
    export_serving_model(
        model, export_dir, warmup, co_interaction=CoInteractionChannel(model.item_tower.item_ids, neighbours, 1.0, 2.0)
    )
    loaded = tf.saved_model.load(export_dir)
    subgraph = next(iter(tf.data.TFRecordDataset([trained["paths"]["test"]], "GZIP"))).numpy()
    state = loaded.signatures[s.UPDATE_INTEREST](**{s.SUBGRAPH: tf.constant([subgraph])})[s.INTEREST_STATE]
    item_ids = ["item1", "item2", "item3", "item4"]

    def served(recent: list[str]) -> np.ndarray:
        padded = recent + [s.PADDING_ITEM_ID] * (s.RECENT_ITEMS - len(recent))
        inputs = {
            s.INTEREST_STATE: state,
            s.RECENT_ITEM_IDS: tf.constant([padded]),
            s.ITEM_IDS: tf.constant([item_ids]),
        }
        return loaded.signatures[s.SCORE](**inputs)[s.SCORES].numpy()[0]

    # item2 then item1, the latest first: item3 gains 2 * (1.0 + 0.5 * 0.5), item2 gains 2 * 0.5 * 1.0.
    np.testing.assert_allclose(served(["item2", "item1"]) - served([]), [0.0, 1.0, 2.5, 0.0], atol=1e-5)
    # recommend ranks by the same sum.
    many = ["item2", "item1"] * (s.RECENT_ITEMS // 2)
    top = loaded.signatures[s.RECOMMEND](
        **{
            s.INTEREST_STATE: state,
            s.RECENT_ITEM_IDS: tf.constant([many]),
            s.EXCLUDE_ITEM_IDS: tf.constant([["item1", "item2"]]),
            s.K: tf.constant([100], tf.int32),
        }
    )
    ranked = dict(zip(top[s.ITEM_IDS].numpy()[0].astype(str), top[s.SCORES].numpy()[0], strict=True))
    assert "item1" not in ranked and "item2" not in ranked
    np.testing.assert_allclose([ranked["item3"], ranked["item4"]], served(many)[2:], rtol=1e-5)
    assert ranked["item3"] > served([])[2] + 1.0


def test_score_offsets_shift_exactly_the_served_scores(trained: dict, tmp_path) -> None:
    model = trained["model"]
    item_ids = model.item_tower.item_ids
    counts = {e.item.item_id: e.train_count for e in read_catalog(trained["paths"]["catalog"])}
    lift = rare_item_lift([counts[i] for i in item_ids], strength=2.0, below=1000)
    assert lift.min() > 0 and len(set(lift.tolist())) > 1
    export_dir = str(tmp_path / "lifted")
    warmup = [x.numpy() for x in tf.data.TFRecordDataset([trained["paths"]["eval"]], "GZIP").take(2)]
    export_serving_model(model, export_dir, warmup, score_offsets=lift)
    subgraph = next(iter(tf.data.TFRecordDataset([trained["paths"]["test"]], "GZIP"))).numpy()
    scores = []
    for directory in (trained["export_dir"], export_dir):
        loaded = tf.saved_model.load(directory)
        state = loaded.signatures[s.UPDATE_INTEREST](**{s.SUBGRAPH: tf.constant([subgraph])})[s.INTEREST_STATE]
        scored = loaded.signatures[s.SCORE](
            **{
                s.INTEREST_STATE: state,
                s.RECENT_ITEM_IDS: tf.constant([[s.PADDING_ITEM_ID] * s.RECENT_ITEMS]),
                s.ITEM_IDS: tf.constant([item_ids + ["nope"]]),
            }
        )
        scores.append(scored[s.SCORES].numpy()[0])
    np.testing.assert_allclose(scores[1][:-1] - scores[0][:-1], lift, atol=1e-4)
    # Unknown items stay unscorable.
    assert scores[1][-1] == float("-inf")
    with pytest.raises(ValueError, match="score_offsets"):
        export_serving_model(model, str(tmp_path / "bad"), warmup, score_offsets=lift[:-1])


def test_evaluator_judges_models_with_different_score_offsets_without_them(trained: dict, tmp_path) -> None:
    model, paths, plain = trained["model"], trained["paths"], trained["export_dir"]
    counts = {e.item.item_id: e.train_count for e in read_catalog(paths["catalog"])}
    lift = rare_item_lift([counts[i] for i in model.item_tower.item_ids], strength=3.0, below=1000)
    lifted = str(tmp_path / "lifted")
    warmup = [x.numpy() for x in tf.data.TFRecordDataset([paths["eval"]], "GZIP").take(2)]
    export_serving_model(model, lifted, warmup, score_offsets=lift)
    assert read_score_offsets(plain) == {}
    offsets = read_score_offsets(lifted)
    assert [offsets[i] for i in model.item_tower.item_ids] == pytest.approx(lift.tolist())
    files, catalog = [paths["eval"]], paths["catalog"]
    as_served = evaluate(lifted, files, catalog)["model"]
    unlifted = evaluate(plain, files, catalog)["model"]
    # The lift changes what is served (here it costs), so served metrics would compare rules, not models.
    assert as_served["ndcg@10"] < unlifted["ndcg@10"]
    assert evaluate(lifted, files, catalog, without_score_offsets=True)["model"] == pytest.approx(unlifted)
    verdict = judge(lifted, plain, files, catalog)
    assert verdict["blessed"] and "without score offsets" in verdict["blessing_rule"], verdict["blessing_rule"]
    assert verdict["compared"] == pytest.approx({"model": unlifted["ndcg@10"], "baseline": unlifted["ndcg@10"]})
    # Against a model with the same offsets the served rankings are compared, as before.
    same = judge(lifted, lifted, files, catalog)
    assert same["blessed"] and "model_without_score_offsets" not in same
    assert same["compared"]["model"] == pytest.approx(as_served["ndcg@10"])


def test_trainer_aligns_the_lift_with_the_model_vocabulary(trained: dict) -> None:
    model = trained["model"]
    entries = read_catalog(trained["paths"]["catalog"])
    assert _score_offsets(entries, model, TrainerConfig(rare_item_boost=0.0)) is None
    counts = {e.item.item_id: e.train_count for e in entries}
    # The vocabulary is ordered by frequency, not as the catalog file is.
    assert model.item_tower.item_ids != [e.item.item_id for e in entries]
    offsets = _score_offsets(entries, model, TrainerConfig(rare_item_boost=1.0, rare_item_boost_below=10_000))
    expected = rare_item_lift([counts[i] for i in model.item_tower.item_ids], 1.0, 10_000)
    np.testing.assert_array_equal(offsets, expected)


def test_warmup_file_holds_one_request_per_signature(trained: dict) -> None:
    from tensorflow_serving.apis import prediction_log_pb2

    logs = [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset([os.path.join(trained["export_dir"], WARMUP_FILE)])
    ]
    # Exported on stand-in text vectors, without BERT: every signature but encode_items
    # (test_new_item_encoder covers that one's warmup).
    expected = sorted(set(s.SIGNATURES) - {s.ENCODE_ITEMS})
    assert sorted(log.predict_log.request.model_spec.signature_name for log in logs) == expected


def test_new_user_with_empty_window_gets_a_finite_state(trained: dict) -> None:
    loaded = tf.saved_model.load(trained["export_dir"])
    empty = encode_interest_subgraph([], 10, {}).SerializeToString()
    state = loaded.signatures[s.UPDATE_INTEREST](subgraph=tf.constant([empty]))[s.INTEREST_STATE].numpy()
    assert state.shape == (1, s.NUM_INTERESTS, s.INTEREST_DIM) and np.isfinite(state).all()


def _interest_call(loaded, history: list, prediction_time: int, checkpoint, window: int = 3):
    plan = plan_update(history, prediction_time, window, checkpoint)
    categories = {synthetic.item_id(i): (f"cat{i % 3}",) for i in range(synthetic.NUM_ITEMS)}
    signature, inputs = interest_request(plan, prediction_time, categories)
    outputs = loaded.signatures[signature](**{name: tf.constant(value) for name, value in inputs.items()})
    memory = outputs[s.LONG_TERM_MEMORY].numpy()[0]
    return outputs[s.INTEREST_STATE].numpy()[0], memory, checkpoint_after(plan, memory, prediction_time, 1), plan


def test_incremental_memory_folding_matches_full_recomputation(trained: dict) -> None:
    loaded = tf.saved_model.load(trained["export_dir"])
    # A window of 3 over 12 events: 9 events fall out of it one by one.
    history = [
        Event("walker", synthetic.item_id(5 + k), "rating", 1_000_000 + 86_400 * k, 4.0, "", f"w{k}") for k in range(12)
    ]
    checkpoint = None
    for k in range(1, len(history) + 1):
        state, memory, checkpoint, plan = _interest_call(loaded, history[:k], history[k - 1].timestamp + 1, checkpoint)
        assert (plan.prior_memory is None) == (k == 1), k  # incremental once a checkpoint exists
    full_state, full_memory, _, full_plan = _interest_call(loaded, history, history[-1].timestamp + 1, None)
    assert full_plan.prior_memory is None and len(full_plan.fold) == 9
    assert full_memory[-1] > s.NO_MEMORY_LOG_MASS / 2
    np.testing.assert_allclose(memory, full_memory, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state, full_state, rtol=1e-5, atol=1e-5)
    # The memory is the recency-weighted mean of the evicted events' item vectors.
    tower = trained["model"].item_tower
    t = history[-1].timestamp + 1
    evicted = history[:9]
    vectors = tower.all_item_vectors().numpy()[[tower.item_ids.index(e.item_id) + 1 for e in evicted]]
    log_w = np.array([-(t - e.timestamp) / SECONDS_PER_DAY / MEMORY_TIME_SCALE_DAYS for e in evicted])
    w = np.exp(log_w)
    np.testing.assert_allclose(full_memory[:-1], (w[:, None] * vectors).sum(0) / w.sum(), rtol=1e-4, atol=1e-5)
    assert full_memory[-1] == pytest.approx(np.log(w.sum()), abs=1e-5)


def test_a_late_event_forces_a_full_recomputation(trained: dict) -> None:
    loaded = tf.saved_model.load(trained["export_dir"])
    history = [Event("late", synthetic.item_id(k), "view", 2_000_000 + 600 * k, 1.0, "", f"l{k}") for k in range(8)]
    *_, checkpoint, _ = _interest_call(loaded, history, history[-1].timestamp + 1, None)
    late = Event("late", synthetic.item_id(20), "view", 2_000_000 + 300, 1.0, "", "l-late")
    *_, plan = _interest_call(loaded, [*history, late], history[-1].timestamp + 2, checkpoint)
    assert plan.prior_memory is None and late in plan.remembered


def test_sequence_only_ablation_reads_the_window_without_graph_attention(tmp_path) -> None:
    with pytest.raises(ValueError, match="event_context_blocks"):
        TrainerConfig(message_passing_rounds=0, event_context_blocks=0)
    paths = synthetic.make_dataset(str(tmp_path))
    entries = read_catalog(paths["catalog"])
    config = TrainerConfig(
        epochs=6, batch_size=64, num_sampled=8, learning_rate=1e-2, message_passing_rounds=0, use_memory=False
    )
    tf.keras.utils.set_random_seed(1)
    model = build_model(entries, synthetic.random_text_vectors(len(entries)), config)
    model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate))
    train = training_dataset([paths["train"]], config.batch_size, shuffle=True, seed=1)
    model(next(iter(train))[0])
    assert not [w.name for w in model.weights if "gat" in w.name.lower()]
    model.fit(train, epochs=config.epochs, verbose=0)
    export_dir = os.path.join(str(tmp_path), "export", "1")
    warmup = [x.numpy() for x in tf.data.TFRecordDataset([paths["eval"]], "GZIP").take(1)]
    export_serving_model(model, export_dir, warmup)
    result = evaluate(export_dir, [paths["test"]], paths["catalog"])
    # The next item is the successor of the latest one: the latest event's contextual state suffices.
    assert result["model"]["mrr@10"] > 0.5, result


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_training_steps_switch_on_the_event_context_dropout(tmp_path, dropout: float) -> None:
    # The custom train_step calls the encoder directly, so the training flag must be passed down
    # by hand: before it was, the configured dropout never acted.
    paths = synthetic.make_dataset(str(tmp_path))
    entries = read_catalog(paths["catalog"])
    # Exact softmax and a zero learning rate: nothing but dropout can make two steps differ.
    config = TrainerConfig(num_sampled=0, event_context_dropout=dropout)
    tf.keras.utils.set_random_seed(3)
    model = build_model(entries, synthetic.random_text_vectors(len(entries)), config)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.0))
    graph, labels = next(iter(training_dataset([paths["train"]], 64, shuffle=False)))
    model(graph)
    # The step reports a running mean: the second report equals the first iff both losses are equal.
    first = float(model.train_step((graph, labels))["loss"])
    second = float(model.train_step((graph, labels))["loss"])
    assert (first != second) == (dropout > 0), (first, second)
    # Outside training the same batch always gives the same loss.
    assert float(model._loss(graph, labels, training=False)) == float(model._loss(graph, labels, training=False))
