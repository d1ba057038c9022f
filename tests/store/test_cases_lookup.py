"""Looking up many cases at once (the alert feed's first alerts of a burst), any id content."""

from __future__ import annotations

from store import cases
from store.store import Store


def _case(case_id: str, tag: int) -> dict:
    return {
        "case_id": case_id, "tag_id": tag, "owner_id": "o1", "status": "open",
        "reported_at": 1_000, "stolen_at": 500, "place": "", "description": "",
        "updated_at": 1_000,
    }  # fmt: skip


def test_get_cases_finds_the_existing_ones_whatever_their_ids(store: Store) -> None:
    odd = ["c_1", "quote'd", 'dq"x', "com,ma", "back\\slash", "ünï"]
    cases.write_cases(store, [(_case(c, 100 + i), "test", "") for i, c in enumerate(odd)])
    found = cases.get_cases(store, [*odd, "missing", "c_1"])
    assert set(found) == set(odd)
    assert found["com,ma"]["tag_id"] == 103 and found["quote'd"]["status"] == "open"
    assert cases.get_cases(store, []) == {}
    assert cases.get_cases(store, ["missing"]) == {}
