"""The serving contract: signature names, their inputs and outputs, and dtypes.

The exported SavedModel, the model server's checks, and the gRPC client all
read these names; nothing else spells them.

    update_interest(subgraph)                         -> interest_state
    recommend(interest_state, exclude_item_ids, k)    -> item_ids, scores
    score(interest_state, item_ids)                   -> scores

`interest_state` is a float32 [batch, INTEREST_DIM] vector per user: what the
model knows of the user's current interests, computed from the user's interest
subgraph (schemas/graph.py). `exclude_item_ids` is padded with "" (which never
names an item); `k` is a scalar.
"""

from __future__ import annotations

import dataclasses

DEFAULT_MODEL_NAME = "interest_graph"
INTEREST_DIM = 64

UPDATE_INTEREST = "update_interest"
RECOMMEND = "recommend"
SCORE = "score"
# A request without a signature name gets TF Serving's "serving_default"; the
# export makes it the same function as update_interest.
DEFAULT_SIGNATURE = "serving_default"

SUBGRAPH = "subgraph"
INTEREST_STATE = "interest_state"
EXCLUDE_ITEM_IDS = "exclude_item_ids"
K = "k"
ITEM_IDS = "item_ids"
SCORES = "scores"

PADDING_ITEM_ID = ""


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


SIGNATURES: dict[str, SignatureContract] = {
    UPDATE_INTEREST: SignatureContract(
        UPDATE_INTEREST,
        inputs=(TensorContract(SUBGRAPH, "string", (None,)),),
        outputs=(TensorContract(INTEREST_STATE, "float32", (None, INTEREST_DIM)),),
    ),
    RECOMMEND: SignatureContract(
        RECOMMEND,
        inputs=(
            TensorContract(INTEREST_STATE, "float32", (None, INTEREST_DIM)),
            TensorContract(EXCLUDE_ITEM_IDS, "string", (None, None)),
            TensorContract(K, "int32", ()),
        ),
        outputs=(TensorContract(ITEM_IDS, "string", (None, None)), TensorContract(SCORES, "float32", (None, None))),
    ),
    SCORE: SignatureContract(
        SCORE,
        inputs=(
            TensorContract(INTEREST_STATE, "float32", (None, INTEREST_DIM)),
            TensorContract(ITEM_IDS, "string", (None, None)),
        ),
        outputs=(TensorContract(SCORES, "float32", (None, None)),),
    ),
}
