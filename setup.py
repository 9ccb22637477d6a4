"""interest-graph: fresh user interest graphs from behaviour events, served over TF Serving's API."""

from setuptools import find_packages, setup

setup(
    name="interest-graph",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.11,<3.12",
    packages=find_packages(
        include=["schemas", "pipeline", "pipeline.*", "trainer", "serving", "serving.*", "interest_graph"]
    ),
    package_data={"schemas": ["*.pbtxt"]},
    # Exact versions live in constraints.txt; these are the direct needs.
    install_requires=[
        "tensorflow",
        "tf-keras",
        "tensorflow-gnn",
        "keras-nlp",
        "tensorflow-serving-api",
        "tfx",
        "grpcio",
        "protobuf",
        "redis",
        "safetensors",
        "matplotlib",
    ],
    entry_points={"console_scripts": ["interest-graph=interest_graph.cli:main"]},
)
