from __future__ import annotations

from collections import Counter

from pipeline.datasets.movielens import convert_movielens_100k
from schemas.events import Event, read_events, read_items


def test_movielens_converts_to_valid_events_and_items(tmp_path, movielens_dir: str) -> None:
    events_path, items_path = convert_movielens_100k(movielens_dir, str(tmp_path))
    events = list(read_events(events_path))
    assert all(isinstance(e, Event) for e in events)
    assert len(events) == 100_000
    assert len({e.user_id for e in events}) == 943 and len({e.item_id for e in events}) == 1682
    assert Counter(e.event_type for e in events) == {"rating": 100_000}
    assert {e.value for e in events} == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert len({e.event_id for e in events}) == 100_000
    items, rejected = read_items(items_path)
    assert not rejected and len(items) == 1682
    toy_story = next(i for i in items if i.item_id == "1")
    assert toy_story.title == "Toy Story"
    assert toy_story.categories == ("Animation", "Children's", "Comedy")
    assert "1995" in toy_story.description
