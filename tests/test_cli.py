"""Command-line flags reach the trainer settings they name."""

from __future__ import annotations

from interest_graph.cli import _trainer_settings, build_parser

RUN = ["pipeline", "run", "--events", "e", "--items", "i", "--bert-dir", "b", "--output", "o"]


def test_rare_item_boost_flag_reaches_the_trainer_in_both_profiles() -> None:
    parser = build_parser()
    assert _trainer_settings(parser.parse_args(RUN)) == {}
    assert _trainer_settings(parser.parse_args(RUN + ["--rare-item-boost", "1.5"])) == {"rare_item_boost": 1.5}
    # 0 is a setting (the lift off), not "no flag".
    assert _trainer_settings(parser.parse_args(RUN + ["--rare-item-boost", "0"])) == {"rare_item_boost": 0.0}
    gpu = _trainer_settings(parser.parse_args(RUN + ["--profile", "gpu", "--rare-item-boost", "1.5"]))
    assert gpu["rare_item_boost"] == 1.5 and gpu["text_finetune_layers"] == 2
    demo = _trainer_settings(parser.parse_args(["demo", "--epochs", "2", "--rare-item-boost", "0.5"]))
    assert demo == {"epochs": 2, "rare_item_boost": 0.5}
