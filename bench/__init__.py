"""Scripts outside the test suite: reference vectors and benchmarks."""

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
