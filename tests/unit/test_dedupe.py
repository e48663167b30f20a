"""The bounded dedupe window."""

import pytest

from ostracon.dedupe import DedupeWindow


def test_second_add_is_a_duplicate() -> None:
    w = DedupeWindow(10)
    assert w.add("a") is True
    assert w.add("a") is False
    assert "a" in w and len(w) == 1


def test_window_forgets_the_oldest_beyond_capacity() -> None:
    w = DedupeWindow(3)
    w.extend(["a", "b", "c", "d"])
    assert "a" not in w
    assert all(k in w for k in "bcd")
    assert len(w) == 3
    assert w.add("a") is True  # forgotten, so new again
    assert "b" not in w


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DedupeWindow(0)
