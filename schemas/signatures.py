"""The serving contract: signature names, their inputs and outputs, and dtypes.

The exported SavedModel, the model server's checks, and the gRPC client all
read these names; nothing else spells them.

    update_interest(subgraph)                         -> interest_state,
                                                         long_term_memory and the
                                                         readable interest graph
    fold_interest(subgraph, long_term_memory)         -> the same, incrementally:
                                                         the subgraph's memory nodes
                                                         are only the newly evicted
                                                         events, merged into the
                                                         given memory
    recommend(interest_state, recent_item_ids,       -> item_ids, scores
              exclude_item_ids, k)
    score(interest_state, recent_item_ids, item_ids)  -> scores
    encode_items(titles, descriptions,                -> item_vectors, item_bias
                 item_categories)

`interest_state` is float32 [batch, interests, INTEREST_DIM]: one or more
interest vectors per user (a person can like more than one kind of thing); an
item's score is its best match over the user's interests. It is computed from
the user's interest subgraph (schemas/graph.py). NUM_INTERESTS is the default
count: 4, each pooling the user's events with its own attention query
(trainer/multi_interest.py), chosen on validation (bench/quality). A reader
takes the count from the tensor: a model trained with another `num_interests`
serves the same signatures.

The readable interest graph: the window items and categories that weigh most
in the user's current interests, with weights that sum to 1 over the window
(`interest_item_ids`/`interest_item_weights`, top TOP_INTEREST_ITEMS;
`interest_categories`/`interest_category_weights`, top TOP_INTEREST_CATEGORIES;
padded with "" and weight 0).

`recent_item_ids` are the items of the user's latest events, most recent
first (at most RECENT_ITEMS, padded with ""): the items of the window's last
events, as `update_interest` returns them. `recommend` and `score` add the
co-interaction channel (trainer/co_interaction_channel.py): a candidate
gains from being often consumed next to those items in training, the nearer
the more. A client that holds the user's events takes them from there
(`recent_item_ids_of`); they need no storing.

`encode_items` places items the model never saw (added to the catalog after
training) in its item space: text through the model's BERT, categories
through its category embeddings, and the bias the model gives items it knows
least. `item_categories` is padded with ""; categories the model does not
know are ignored. A client scores such items as `score` does its own: the
best match over the user's interests plus the bias.

`exclude_item_ids` is padded with "" (which never names an item); `k` is int32
[batch], one list length per row (every input has the batch dimension, which
TF Serving's request batching requires); the outputs are as wide as the
largest k, shorter rows padded with "" and -inf.
"""

from __future__ import annotations

import dataclasses

DEFAULT_MODEL_NAME = "interest_graph"
INTEREST_DIM = 64
NUM_INTERESTS = 4
TOP_INTEREST_ITEMS = 10
TOP_INTEREST_CATEGORIES = 5
# The co-interaction channel reads this many of the user's latest items; with
# its half-life of a few events, older ones would weigh under 1 %.
RECENT_ITEMS = 20
# The long-term memory: the recency-weighted mean item vector of the events
# older than the window, then the log of their total weight at the prediction
# time (NO_MEMORY_LOG_MASS: nothing remembered). See trainer/long_term_memory.py.
MEMORY_WIDTH = INTEREST_DIM + 1
NO_MEMORY_LOG_MASS = -1e9

UPDATE_INTEREST = "update_interest"
FOLD_INTEREST = "fold_interest"
RECOMMEND = "recommend"
SCORE = "score"
ENCODE_ITEMS = "encode_items"
# A request without a signature name gets TF Serving's "serving_default"; the
# export makes it the same function as update_interest.
DEFAULT_SIGNATURE = "serving_default"

SUBGRAPH = "subgraph"
INTEREST_STATE = "interest_state"
LONG_TERM_MEMORY = "long_term_memory"
EXCLUDE_ITEM_IDS = "exclude_item_ids"
K = "k"
ITEM_IDS = "item_ids"
SCORES = "scores"
RECENT_ITEM_IDS = "recent_item_ids"
INTEREST_ITEM_IDS = "interest_item_ids"
INTEREST_ITEM_WEIGHTS = "interest_item_weights"
INTEREST_CATEGORIES = "interest_categories"
INTEREST_CATEGORY_WEIGHTS = "interest_category_weights"
TITLES = "titles"
DESCRIPTIONS = "descriptions"
ITEM_CATEGORIES = "item_categories"
ITEM_VECTORS = "item_vectors"
ITEM_BIAS = "item_bias"

PADDING_ITEM_ID = ""

# Beside the SavedModel: the constant each item's served score carries on top
# of the model's own (a JSON object item id -> offset, nonzero ones only; the
# rare-item lift), so an evaluator can compare two models without their
# ranking rules. A model without the file adds nothing.
SCORE_OFFSETS_FILE = "assets.extra/score_offsets.json"


@dataclasses.dataclass(frozen=True)
class TensorContract:
    """Name, dtype (TF dtype name) and shape (None = any size) of one tensor."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


@dataclasses.dataclass(frozen=True)
class SignatureContract:
    """Inputs and outputs of one serving signature."""

    name: str
    inputs: tuple[TensorContract, ...]
    outputs: tuple[TensorContract, ...]


_INTEREST_OUTPUTS = (
    TensorContract(INTEREST_STATE, "float32", (None, None, INTEREST_DIM)),
    TensorContract(LONG_TERM_MEMORY, "float32", (None, MEMORY_WIDTH)),
    TensorContract(INTEREST_ITEM_IDS, "string", (None, TOP_INTEREST_ITEMS)),
    TensorContract(INTEREST_ITEM_WEIGHTS, "float32", (None, TOP_INTEREST_ITEMS)),
    TensorContract(INTEREST_CATEGORIES, "string", (None, TOP_INTEREST_CATEGORIES)),
    TensorContract(INTEREST_CATEGORY_WEIGHTS, "float32", (None, TOP_INTEREST_CATEGORIES)),
    TensorContract(RECENT_ITEM_IDS, "string", (None, RECENT_ITEMS)),
)

SIGNATURES: dict[str, SignatureContract] = {
    UPDATE_INTEREST: SignatureContract(
        UPDATE_INTEREST, inputs=(TensorContract(SUBGRAPH, "string", (None,)),), outputs=_INTEREST_OUTPUTS
    ),
    FOLD_INTEREST: SignatureContract(
        FOLD_INTEREST,
        inputs=(
            TensorContract(SUBGRAPH, "string", (None,)),
            TensorContract(LONG_TERM_MEMORY, "float32", (None, MEMORY_WIDTH)),
        ),
        outputs=_INTEREST_OUTPUTS,
    ),
    RECOMMEND: SignatureContract(
        RECOMMEND,
        inputs=(
            TensorContract(INTEREST_STATE, "float32", (None, None, INTEREST_DIM)),
            TensorContract(RECENT_ITEM_IDS, "string", (None, RECENT_ITEMS)),
            TensorContract(EXCLUDE_ITEM_IDS, "string", (None, None)),
            TensorContract(K, "int32", (None,)),
        ),
        outputs=(TensorContract(ITEM_IDS, "string", (None, None)), TensorContract(SCORES, "float32", (None, None))),
    ),
    SCORE: SignatureContract(
        SCORE,
        inputs=(
            TensorContract(INTEREST_STATE, "float32", (None, None, INTEREST_DIM)),
            TensorContract(RECENT_ITEM_IDS, "string", (None, RECENT_ITEMS)),
            TensorContract(ITEM_IDS, "string", (None, None)),
        ),
        outputs=(TensorContract(SCORES, "float32", (None, None)),),
    ),
    ENCODE_ITEMS: SignatureContract(
        ENCODE_ITEMS,
        inputs=(
            TensorContract(TITLES, "string", (None,)),
            TensorContract(DESCRIPTIONS, "string", (None,)),
            TensorContract(ITEM_CATEGORIES, "string", (None, None)),
        ),
        outputs=(
            TensorContract(ITEM_VECTORS, "float32", (None, INTEREST_DIM)),
            TensorContract(ITEM_BIAS, "float32", (None,)),
        ),
    ),
}
