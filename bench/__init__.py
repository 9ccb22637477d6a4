"""Scripts outside the test suite: reference vectors and benchmarks."""
