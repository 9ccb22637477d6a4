"""Item vectors: what the model knows of each item, from text, categories and use."""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from trainer.fine_tuned_text import FineTunedText  # noqa: E402

OOV_INDEX = 0


class ItemTower(tf.keras.layers.Layer):
    """Maps item ids to item vectors and popularity biases.

    An item's own vector is the sum of three views: a learned projection of its
    frozen BERT text vector (so items with little history still have a
    meaningful place in the space), the mean of its categories' embeddings
    (items receiving from their categories), and a learned id embedding that
    captures what text cannot. Then one round of message passing over the
    item <-> item co-interaction graph adds a learned transform of the
    weighted mean of its neighbours' own vectors: an item is also what it is
    consumed with, which sharpens items whose id embedding saw few examples.
    A scalar bias per item absorbs popularity, so the dot product with the
    interest state only has to explain the user-specific part.

    Index 0 is reserved for unknown items; it gets no text and no categories.

    Args:
      item_ids: the vocabulary, most frequent first (the sampled-softmax
        log-uniform sampler assumes this order); index i+1 is item_ids[i].
      text_vectors: [len(item_ids), text_dim] frozen BERT vectors.
      category_names: the category vocabulary.
      item_category_ids: per item, indices into category_names.
      output_dim: width of item vectors.
      category_dim: width of category embeddings.
      use_text: include the text view (off: the no-text ablation).
      co_interactions: per item, ((neighbour index into item_ids, weight), ...)
        from the training split; empty lists (or none at all) switch the
        co-interaction round off for those items.
      fine_tuned_text: the GPU profile's text view, whose top BERT layers
        train (rows: the unknown item, then item_ids); None keeps the frozen
        `text_vectors`. Its vectors for the whole catalog are kept in
        `text_table`: a training step recomputes only the rows of its batch's
        items (`all_item_vectors(fresh_items=...)`), the other rows are from the
        last `refresh_text_table()`.
    """

    def __init__(
        self,
        item_ids: Sequence[str],
        text_vectors: np.ndarray | Sequence[Sequence[float]],
        category_names: Sequence[str],
        item_category_ids: Sequence[Sequence[int]],
        output_dim: int,
        category_dim: int,
        use_text: bool = True,
        co_interactions: Sequence[Sequence[Sequence[float]]] | None = None,
        fine_tuned_text: FineTunedText | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.item_ids = list(item_ids)
        self.text_vectors = np.asarray(text_vectors, dtype=np.float32)
        self.category_names = list(category_names)
        self.item_category_ids = [list(c) for c in item_category_ids]
        self.output_dim = output_dim
        self.category_dim = category_dim
        self.use_text = use_text
        self.co_interactions = [[[int(j), float(w)] for j, w in row] for row in (co_interactions or [])]
        if self.text_vectors.shape[0] != len(self.item_ids):
            raise ValueError("text_vectors must have one row per item id")
        if self.co_interactions and len(self.co_interactions) != len(self.item_ids):
            raise ValueError("co_interactions must have one row per item id")
        self.vocabulary_size = len(self.item_ids) + 1
        self.item_lookup = tf.keras.layers.StringLookup(vocabulary=self.item_ids, num_oov_indices=1, name="item_lookup")
        self.category_lookup = tf.keras.layers.StringLookup(
            vocabulary=self.category_names or ["<none>"], num_oov_indices=1, name="category_lookup"
        )
        text = np.concatenate([np.zeros((1, self.text_vectors.shape[1]), np.float32), self.text_vectors])
        self._text = tf.constant(text)
        self.fine_tuned_text = fine_tuned_text
        if fine_tuned_text is not None:
            if len(fine_tuned_text.item_texts) != self.vocabulary_size:
                raise ValueError("fine_tuned_text must have one text per vocabulary row (unknown item first)")
            self.text_table = self.add_weight(
                name="fine_tuned_text_table",
                shape=(self.vocabulary_size, fine_tuned_text.hidden_dim),
                initializer="zeros",
                trainable=False,
            )
            self.refresh_text_table()
        # Row-normalised item x category matrix: an item's category vector is the
        # mean of its categories' embeddings (category index shifted for OOV).
        membership = np.zeros((self.vocabulary_size, len(self.category_names) + 1), np.float32)
        for row, categories in enumerate(self.item_category_ids, start=1):
            for c in categories:
                membership[row, c + 1] = 1.0 / len(categories)
        self._membership = tf.constant(membership)
        self._neighbourhood = self._neighbour_matrix()
        # Views that are switched off get no layer: no untrained weights in the export.
        self.neighbour_projection = None
        if self._neighbourhood is not None:
            self.neighbour_projection = tf.keras.layers.Dense(output_dim, use_bias=False, name="neighbour_projection")
            self.neighbour_projection.build((None, output_dim))
        self.text_projection = None
        if use_text:
            text_dim = fine_tuned_text.hidden_dim if fine_tuned_text is not None else self.text_vectors.shape[1]
            self.text_projection = tf.keras.layers.Dense(output_dim, use_bias=False, name="text_projection")
            self.text_projection.build((None, text_dim))
        self.category_embedding = tf.keras.layers.Embedding(
            len(self.category_names) + 1, category_dim, name="category_embedding"
        )
        self.category_projection = tf.keras.layers.Dense(output_dim, use_bias=False, name="category_projection")
        self.id_embedding = tf.keras.layers.Embedding(
            self.vocabulary_size,
            output_dim,
            embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.01),
            name="id_embedding",
        )
        self.bias = self.add_weight(name="item_bias", shape=(self.vocabulary_size,), initializer="zeros")
        # Built now: `all_item_vectors` reads the weight matrices directly.
        self.category_embedding.build((None,))
        self.category_projection.build((None, category_dim))
        self.id_embedding.build((None,))

    def _neighbour_matrix(self) -> tf.sparse.SparseTensor | None:
        """Row-normalised [vocabulary, vocabulary] co-interaction weights (row 0: unknown item)."""
        indices, values = [], []
        for row, neighbours in enumerate(self.co_interactions, start=1):
            total = sum(w for _, w in neighbours)
            for j, w in neighbours:
                indices.append([row, int(j) + 1])
                values.append(w / total)
        if not indices:
            return None
        matrix = tf.sparse.SparseTensor(
            np.array(indices, np.int64), np.array(values, np.float32), [self.vocabulary_size, self.vocabulary_size]
        )
        return tf.sparse.reorder(matrix)

    def refresh_text_table(self, chunk: int = 256) -> None:
        """Recomputes every item's fine-tuned text vector (before validation and export)."""
        if self.fine_tuned_text is None:
            return
        rows = [
            self.fine_tuned_text(tf.range(start, min(start + chunk, self.vocabulary_size)), training=False)
            for start in range(0, self.vocabulary_size, chunk)
        ]
        self.text_table.assign(tf.concat(rows, axis=0))

    def all_item_vectors(self, fresh_items: tf.Tensor | None = None) -> tf.Tensor:
        """[vocabulary_size, output_dim] vectors of every item (row 0: unknown).

        Args:
          fresh_items: with a fine-tuned text view, the vocabulary indices
            whose text vectors are recomputed by the trainable BERT layers (so
            gradients reach them); unique indices, e.g. a training batch's items.
        """
        category_vectors = tf.matmul(self._membership, self.category_embedding.embeddings)
        vectors = self.category_projection(category_vectors) + self.id_embedding.embeddings
        if self.use_text:
            vectors += self.text_projection(self._text_vectors(fresh_items))
        if self._neighbourhood is not None:
            vectors += self.neighbour_projection(tf.sparse.sparse_dense_matmul(self._neighbourhood, vectors))
        return vectors

    def _text_vectors(self, fresh_items: tf.Tensor | None) -> tf.Tensor:
        if self.fine_tuned_text is None:
            return self._text
        if fresh_items is None:
            return tf.convert_to_tensor(self.text_table)
        fresh = self.fine_tuned_text(fresh_items, training=True)
        return tf.tensor_scatter_nd_update(self.text_table, fresh_items[:, None], fresh)

    def indices(self, item_ids: tf.Tensor) -> tf.Tensor:
        """Vocabulary indices of item ids (0 for unknown items)."""
        return self.item_lookup(item_ids)

    def call(self, item_ids: tf.Tensor, item_vectors: tf.Tensor | None = None) -> tf.Tensor:
        """Item vectors of the given ids (any shape; one vector per id).

        Args:
          item_ids: string ids.
          item_vectors: `all_item_vectors()` computed once by the caller (a
            training step, or the export's fixed table); None computes them.
        """
        table = self.all_item_vectors() if item_vectors is None else item_vectors
        return tf.gather(table, self.indices(item_ids))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            item_ids=self.item_ids,
            text_vectors=self.text_vectors.tolist(),
            category_names=self.category_names,
            item_category_ids=self.item_category_ids,
            output_dim=self.output_dim,
            category_dim=self.category_dim,
            use_text=self.use_text,
            co_interactions=self.co_interactions,
            fine_tuned_text=None if self.fine_tuned_text is None else tf.keras.layers.serialize(self.fine_tuned_text),
        )
        return config
