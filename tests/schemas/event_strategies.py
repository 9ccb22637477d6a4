"""Hypothesis strategies for raw event records, as producers send them: mostly right, sometimes wrong."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from schemas.events import EVENT_FIELDS, EVENT_TYPES, MAX_FUTURE_SECONDS, MAX_ID_CHARS, MAX_TEXT_CHARS

NOW = 1_700_000_000

# Values a JSON or CSV producer could send, well-formed or not.
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
# Per field: values that are right, and values a careless producer sends.
valid_values: dict[str, st.SearchStrategy[Any]] = {
    "user_id": st.one_of(st.text(min_size=1, max_size=12).filter(str.strip), st.integers(min_value=0)),
    "item_id": st.one_of(st.text(min_size=1, max_size=12).filter(str.strip), st.integers(min_value=0)),
    "event_type": st.one_of(st.sampled_from(EVENT_TYPES), st.sampled_from([" View", "PURCHASE"])),
    "timestamp": st.one_of(
        st.integers(min_value=0, max_value=NOW + MAX_FUTURE_SECONDS),
        st.floats(min_value=0, max_value=NOW),
        st.from_regex(r"[0-9]{1,10}(\.[0-9]{0,3})?", fullmatch=True),
    ),
    "value": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-5, 5), st.just("4.5")),
    "text": st.one_of(st.text(max_size=30), st.just("x" * MAX_TEXT_CHARS)),
    "event_id": st.one_of(st.text(max_size=12), st.integers()),
}
invalid_values: dict[str, st.SearchStrategy[Any]] = {
    "user_id": st.one_of(st.just(" "), st.just("u" * (MAX_ID_CHARS + 1)), json_values),
    "item_id": st.one_of(st.just(""), st.just("\ud800"), json_values),
    "event_type": st.one_of(st.sampled_from(["like", "", "views"]), json_values),
    "timestamp": st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=NOW + MAX_FUTURE_SECONDS + 1),
        st.sampled_from(["yesterday", "1e400", "nan", "inf", "", 10**400]),
        json_values,
    ),
    "value": st.one_of(st.sampled_from(["five", "nan", True, float("inf")]), json_values),
    "text": st.one_of(st.just("x" * (MAX_TEXT_CHARS + 1)), st.just("\udfff"), json_values),
    "event_id": st.one_of(st.just("e" * (MAX_ID_CHARS + 1)), st.lists(st.integers(), max_size=2)),
}


@st.composite
def raw_events(draw: st.DrawFn) -> Any:
    """Event-like dicts, each field missing, right or wrong (mostly right); extra keys; now and then no dict at all."""
    if draw(st.integers(0, 19)) == 0:
        return draw(json_values)
    record = {}
    for name in EVENT_FIELDS:
        choice = draw(st.integers(0, 9))
        if choice == 0:
            continue
        record[name] = draw(invalid_values[name] if choice == 1 else valid_values[name])
    record.update(
        draw(st.dictionaries(st.text(max_size=6).filter(lambda k: k not in EVENT_FIELDS), json_values, max_size=2))
    )
    return record
