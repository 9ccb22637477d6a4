"""Training configuration: one typed object, defaults sized for a 2-core CPU.

GPU profile (documented, selected with `TrainerConfig.gpu()`): the top two
BERT layers fine-tuned with the recommender in mixed precision and larger
batches; the same code runs on both (TensorFlow places ops on the
GPU when one is visible), so the GPU profile also runs, slowly, on a CPU.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from schemas.signatures import INTEREST_DIM, NUM_INTERESTS


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """Hyperparameters of the interest model and its training loop.

    The measurements quoted below that compare parts of the model (0.1098 +-
    0.0034 for the defaults, and so on) were taken on seeds 0-2 with one
    interest vector, the default until four were chosen (see
    `num_interests`), and without the rare-item lift (`rare_item_boost=0`):
    the lift is a score offset added at export, after training, and its own
    trade-off is given under `rare_item_boost`.

    Attributes:
      interest_dim: width of item vectors and of the interest state (fixed by
        the serving contract).
      event_dim: width of the event (edge) representation.
      attention_heads: heads of the event <-> event attention and of the GATv2
        attention from events to the user.
      category_dim: width of category embeddings.
      num_interests: interest vectors per user; an item scores by its best
        match. With more than one, each interest also pools the window's
        events with its own attention query (`MultiInterestAttention`). 4 by
        default, chosen on validation: on MovieLens-100k validation NDCG@10
        0.1260 +- 0.0062 against 0.1213 +- 0.0045 with one interest (seeds
        0-4, no lift, bench/quality; higher at 4 of 5 seeds), while test
        NDCG@10 was level within the seed spread (0.1068 +- 0.0035 against
        0.1081 +- 0.0039). The other ablations were measured on the
        single-interest model. On the shipped default with the co-interaction
        channel (seeds 0-4, bench/quality `interest_graph_default_single_interest`)
        one interest measured test NDCG@10 0.1214 +- 0.0047 against 0.1175 +-
        0.0034 (higher at 4 of 5 seeds, by less than one standard deviation)
        and validation 0.1414 +- 0.0015 against 0.1429 +- 0.0047 (lower at 3
        of 5): level. Kept at 4, as issue 3 asks for several interests (see
        its closing notes).
      shared_interest_core: with several interests, one core vector (the
        user round's state plus the memory's readout) is shared by every
        interest, and each interest adds its own attention pooling of the
        window's events to it, so the single-interest model is the special
        case whose poolings are zero. False (default): each interest is its
        own slice of the user round's output and of the memory's readout,
        plus its pooling. Tried in session 18 as a fix for the four
        interests, which cost nothing when removed; on MovieLens-100k (seeds
        0-4, bench/quality `interest_graph_shared_interest_core`) it measured
        test NDCG@10 0.1191 +- 0.0030 and validation 0.1414 +- 0.0018, level
        with both the default (0.1175 / 0.1429) and one interest (0.1214 /
        0.1414), so the default was not changed.
      interest_temperature: how an item's matches with the several
        interests combine into its score. 0 (default): its best match, so
        in training only the best-matching interest learns from each item.
        t > 0: the soft maximum `t * logsumexp(s_m / t)`, through which
        every interest learns from every item, weighted by how well it
        matches; at 1, `exp(score)` is the sum over interests of
        `exp(s_m)`. Tried in session 19 as a fix for the four interests; at 1
        on MovieLens-100k (seeds 0-4, bench/quality
        `interest_graph_soft_interests`) it measured test NDCG@10 0.1199 +-
        0.0031 and validation 0.1405 +- 0.0044, level with the best match
        (0.1175 / 0.1429) and one interest (0.1214 / 0.1414), so the default
        was not changed.
      epochs: maximum passes over the training prediction points. 10 keeps
        the CPU profile's training on MovieLens-100k within the 15-minute
        budget with a margin (45-87 s an epoch on the 2-core machine, which
        varies from day to day, plus about 2.5 minutes outside the epochs).
        Every recorded fit of the shipped default (bench/quality, seeds
        0-4) restored an epoch of at most 10 (7, 7, 8, 10, 8), so the cap
        changes none of them. It was 20 until session 16 and 12 until
        session 17; the entries measured then keep their cap in the
        benchmark's registry.
      batch_size: prediction points per step.
      learning_rate: Adam learning rate.
      num_sampled: negatives per step of the sampled-softmax loss; 0 means the
        exact softmax over the whole catalog (affordable for small catalogs).
        1024 was chosen on validation NDCG@10 by the model's tuning grid on
        MovieLens-100k (0.1209 against 0.1179 with 256; test 0.1098 +- 0.0034
        against 0.1080 +- 0.0070, 3 seeds); the exact softmax measured
        0.1094 +- 0.0044 on test with a worse validation score (0.1191).
      learning_rate_plateau_factor: the learning rate is multiplied by this
        after an epoch whose validation NDCG@10 is not the best so far
        (1.0: constant rate); a smaller step near the optimum makes the
        restored best epoch depend less on where the last big step landed
        (with event context and 256 negatives, test NDCG@10 0.1080 +- 0.0070
        against 0.1013 +- 0.0043 at a constant rate, 3 seeds each).
      learning_rate_plateau_patience: consecutive epochs without a better
        validation NDCG@10 before the learning rate is multiplied by
        `learning_rate_plateau_factor`. 1 by default: 2, with early stopping
        patience 5, trained longer but scored lower on MovieLens-100k
        (validation NDCG@10 0.1203 +- 0.0061 against 0.1241 +- 0.0054, test
        0.1029 +- 0.0022 against 0.1050 +- 0.0031, seeds 0-4, bench/quality
        `interest_graph_patient_schedule`; the two were fitted on different
        machines).
      early_stopping_patience: epochs without a better validation NDCG@10
        (full ranking, seen items excluded) before training stops; the best
        epoch's weights are restored.
      text_sequence_length: word pieces of item text read by BERT.
      seed: random seed of weights and sampling.
      use_text: item vectors include the projected BERT text vector (ablation
        switch; without it test NDCG@10 on MovieLens-100k fell from
        0.1098 +- 0.0034 to 0.1023 +- 0.0009, 3 seeds each, bench/quality).
        On the shipped default with the channel (session 17, seeds 0-2) the
        cost is within the seed spread: 0.1146 +- 0.0046 without against
        0.1166 +- 0.0044, validation 0.1376 against 0.1403. It also gives
        items never seen in training their vectors.
      use_categories: items receive messages from their categories in the
        interest subgraph before the user round. Off by default: on
        MovieLens-100k this round lowered test NDCG@10 from 0.1017 +- 0.0060 to
        0.0903 +- 0.0033 (3 seeds each, bench/quality). Categories still enter
        the item vectors (ItemTower) and the readable interest graph.
      use_time: events carry the recency encoding (ablation switch; without
        it test NDCG@10 on MovieLens-100k fell from 0.1098 +- 0.0034 to
        0.0918 +- 0.0069, 3 seeds each, bench/quality; on the shipped
        default, session 17, from 0.1166 +- 0.0044 to 0.1090 +- 0.0004).
      co_interaction_neighbours: co-interaction neighbours per item that item
        vectors receive from (0: no item <-> item round). Off by default: on
        MovieLens-100k, with 10 neighbours test NDCG@10 was 0.0975 +- 0.0076
        against 0.1091 (seeds 0-1 of 3) without (bench/quality).
      message_passing_rounds: rounds of attention from events to the user; from
        the second round on, the user's state so far is the attention query.
        0 with event context is the sequence-only ablation: the latest event's
        contextual state is the user's (a SASRec-like read of the window, no
        attention pooling over the graph); with no memory as well it measured
        test NDCG@10 0.1014 +- 0.0089 against 0.1098 +- 0.0034 with graph
        attention and memory (with 256 negatives 0.0996 +- 0.0049 against
        0.1080 +- 0.0070; 3 seeds each, bench/quality). Default 1: on MovieLens-100k a second
        round measured no better (test NDCG@10 0.1021 vs 0.1026, seed 0, bench/quality) and learned a
        synthetic next-item rule more slowly. Item vectors already carry one
        round of item <- co-interaction/category messages (`ItemTower`), so
        the default still passes messages twice: items, then user. On the
        shipped default with the channel, 0 (sequence only) measured test
        NDCG@10 0.1172 +- 0.0064 against 0.1166 +- 0.0044, validation 0.1376
        against 0.1403 (seeds 0-2, session 16): no measurable cost. That
        ablation keeps the four interests' own attention pooling of the
        events, and the single-interest one keeps this round: each leaves one
        of two attentions from the events to the user. Without both (0
        rounds and one interest, session 20, seeds 0-4, bench/quality
        `interest_graph_no_event_attention`) test NDCG@10 was 0.1138 +-
        0.0061 against 0.1175 +- 0.0034 (lower at 3 of 5 seeds) and
        validation 0.1356 +- 0.0034 against 0.1429 +- 0.0047 (lower at 4 of
        5): the two stand in for each other, and removing both costs, on
        validation by 0.0073 (more than 1.5 standard deviations of either),
        on test by 0.0037 (within the spread).
      use_memory: the long-term memory of events older than the window adds
        to the interest vectors (ablation switch; the memory is still
        computed and returned, so the serving contract does not change).
        On the shipped default, ranked with the memory as served
        (bench/quality), test NDCG@10 0.1175 +- 0.0034 with it against
        0.1141 +- 0.0058 trained without it (seeds 0-4; higher with it at
        4 of 5 seeds), validation 0.1429 +- 0.0047 against 0.1366 +- 0.0045.
        At seeds 0-2 alone the two were level (0.1166 each, session 15).
      event_context_blocks: blocks of event <-> event self-attention within
        the window before events are pooled into the user (0: events are
        pooled independently). On MovieLens-100k test NDCG@10 0.1098 +- 0.0034
        with one block against 0.1040 +- 0.0041 without (with 256 negatives
        0.1080 +- 0.0070 against 0.0994 +- 0.0044; 3 seeds each, bench/quality).
        On the shipped default (session 20, seeds 0-4, bench/quality
        `interest_graph_no_event_to_event_attention`) test NDCG@10 was level
        without it (0.1173 +- 0.0038 against 0.1175 +- 0.0034) and
        validation lower at every seed (0.1335 +- 0.0024 against 0.1429 +-
        0.0047).
      event_context_dropout: dropout of those blocks while training. 0 by
        default, chosen on validation: until the training flag was passed to
        the encoder (session 12), the custom train step never switched this
        dropout on, so every measurement quoted here was taken without it
        although the default read 0.2. Switched on, the shipped default
        measured validation NDCG@10 0.1239 at rate 0.2 and 0.1277 at 0.5,
        against 0.1294 without (seed 0, bench/quality
        `interest_graph_event_dropout`).
      text_finetune_layers: top BERT layers trained jointly with the model,
        run on the unique items of each batch (`FineTunedText`); 0 (CPU
        profile) keeps BERT frozen and its item vectors cached.
      text_learning_rate: Adam learning rate of the fine-tuned BERT layers:
        pretrained weights move far less than the recommender's own (at the
        recommender's rate they collapse every item text to one vector). 2e-5,
        the low end of the usual BERT fine-tuning rates: with the event
        context, 5e-5 moved the near-identical texts of the synthetic test
        catalog 0.16 in cosine distance, past each other; 2e-5 moves them
        0.01-0.04 (`tests/trainer/test_fine_tuned_text.py`).
      mixed_precision: the fine-tuned BERT layers compute in float16 with a
        scaled loss (float32 variables); meant for GPUs.
      rare_item_boost: strength of the exported model's lift for items with
        few training interactions (`trainer.rare_item_boost`; 0: off). It
        raises new items into recommendations at a cost to ranking quality
        on established ones. 1.25 is the largest strength of the sweep in
        `bench/results/rare_item_boost.json` whose validation NDCG@10 stays
        within 2 % of the unlifted model's (0.1206 against 0.1228, 3 seeds,
        one interest); on MovieLens-100k's test split that model measured
        NDCG@10 0.1079 +- 0.0029
        against 0.1098 +- 0.0034 unlifted, and 0.0570 +- 0.0256 against 0 on
        the cold-item slice (12 points; popularity 0). With four interests
        (seeds 0-4) 0.1050 +- 0.0031 against 0.1068 +- 0.0035 unlifted
        (validation -1.5 %), cold slice 0.0543 +- 0.0287; the sweep on the
        four-interest model chose 1.25 again (validation -1.9 %,
        `bench/results/rare_item_boost_4_interests.json`).
      rare_item_boost_below: training interactions from which an item gets
        no lift.
      co_interaction_channel: the served score adds what is consumed next to
        the user's latest items (`trainer/co_interaction_channel.py`), over the
        catalog's co-interaction edges (training events only), with a weight
        chosen after training on validation NDCG@10 (False: weight 0). On
        MovieLens-100k the shipped default measured test NDCG@10 0.1175 +-
        0.0034 with it and 0.1054 +- 0.0038 without (the same fits, seeds
        0-4, one machine, bench/quality; SASRec 0.1043 +- 0.0049 there).
      co_interaction_half_life: the channel weighs the user's item r steps
        back by 0.5 ** (r / half_life): the next item follows most from the
        last few.
    """

    interest_dim: int = INTEREST_DIM
    event_dim: int = 16
    category_dim: int = 16
    num_interests: int = NUM_INTERESTS
    shared_interest_core: bool = False
    interest_temperature: float = 0.0
    attention_heads: int = 4
    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 2e-3
    num_sampled: int = 1024
    learning_rate_plateau_factor: float = 0.3
    learning_rate_plateau_patience: int = 1
    early_stopping_patience: int = 3
    text_sequence_length: int = 48
    seed: int = 7
    use_text: bool = True
    use_categories: bool = False
    use_time: bool = True
    co_interaction_neighbours: int = 0
    message_passing_rounds: int = 1
    use_memory: bool = True
    event_context_blocks: int = 1
    event_context_dropout: float = 0.0
    text_finetune_layers: int = 0
    text_learning_rate: float = 2e-5
    mixed_precision: bool = False
    rare_item_boost: float = 1.25
    rare_item_boost_below: int = 20
    co_interaction_channel: bool = True
    co_interaction_half_life: float = 3.0

    def __post_init__(self) -> None:
        if self.interest_dim != INTEREST_DIM:
            raise ValueError(f"interest_dim must equal the serving contract's INTEREST_DIM={INTEREST_DIM}")
        if self.num_interests < 1:
            raise ValueError("num_interests must be at least 1")
        if self.interest_temperature < 0.0:
            raise ValueError("interest_temperature must be >= 0 (0: best match)")
        if self.message_passing_rounds < 0:
            raise ValueError("message_passing_rounds must be >= 0")
        if self.message_passing_rounds == 0 and not self.event_context_blocks:
            raise ValueError("message_passing_rounds=0 (sequence only) needs event_context_blocks >= 1")
        if self.text_finetune_layers < 0:
            raise ValueError("text_finetune_layers must be >= 0")
        if self.text_finetune_layers and not self.use_text:
            raise ValueError("text_finetune_layers needs use_text")
        if not 0.0 < self.learning_rate_plateau_factor <= 1.0:
            raise ValueError("learning_rate_plateau_factor must be in (0, 1]")
        if self.learning_rate_plateau_patience < 1:
            raise ValueError("learning_rate_plateau_patience must be >= 1")
        if self.event_context_blocks < 0:
            raise ValueError("event_context_blocks must be >= 0")
        if not 0.0 <= self.event_context_dropout < 1.0:
            raise ValueError("event_context_dropout must be in [0, 1)")
        if self.co_interaction_neighbours < 0:
            raise ValueError("co_interaction_neighbours must be >= 0")
        if self.co_interaction_half_life <= 0:
            raise ValueError("co_interaction_half_life must be > 0")
        if self.rare_item_boost < 0:
            raise ValueError("rare_item_boost must be >= 0")
        if self.rare_item_boost_below < 1:
            raise ValueError("rare_item_boost_below must be >= 1")
        if self.interest_dim % self.attention_heads:
            raise ValueError("interest_dim must be divisible by attention_heads")

    @classmethod
    def gpu(cls) -> TrainerConfig:
        """The GPU profile: top two BERT layers fine-tuned in mixed precision, bigger batches."""
        return cls(batch_size=1024, text_finetune_layers=2, mixed_precision=True)

    @classmethod
    def profile(cls, name: str, **overrides: Any) -> TrainerConfig:
        """The named profile ("cpu": the defaults, "gpu": `gpu()`) with `overrides` applied."""
        profiles = {"cpu": cls, "gpu": cls.gpu}
        if name not in profiles:
            raise ValueError(f"unknown trainer profile {name!r}; expected one of {sorted(profiles)}")
        return dataclasses.replace(profiles[name](), **overrides)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown trainer settings: {sorted(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
