"""The stamp synchroniser that stands in for message_filters (issue 6)."""

import pytest

from mono_depth_ros.sync import StampSynchronizer, nearest_stamp


def test_exact_match_in_any_arrival_order():
    got = []
    s = StampSynchronizer(2, queue_size=5, callback=lambda st, m: got.append((st, m)))
    assert s.add(1, 100, "lidar100") == []
    assert s.add(0, 200, "depth200") == []
    out = s.add(0, 100, "depth100")
    assert out == [(100, ["depth100", "lidar100"])]
    assert got == out
    assert s.matched == 1
    assert s.pending() == [1, 0]


def test_no_match_for_different_stamps_without_slop():
    s = StampSynchronizer(3, queue_size=5)
    s.add(0, 100, "a")
    s.add(1, 100, "b")
    assert s.add(2, 101, "c") == []
    assert s.matched == 0


def test_older_unmatched_messages_are_dropped_after_a_match():
    s = StampSynchronizer(2, queue_size=10)
    s.add(0, 1, "d1")  # depth frame without LiDAR
    s.add(0, 2, "d2")
    s.add(1, 2, "l2")
    assert s.matched == 1
    assert s.dropped == [1, 0]
    assert s.unmatched() == [1, 0]


def test_bounded_queue_evicts_oldest_and_counts_it():
    s = StampSynchronizer(2, queue_size=3)
    for t in range(5):
        s.add(0, t, t)
    assert s.pending() == [3, 0]
    assert s.dropped == [2, 0]
    assert s.add(1, 0, "too late") == []  # stamp 0 was evicted
    assert s.add(1, 4, "l4")[0][1] == [4, "l4"]
    assert s.unmatched() == [4, 1]


def test_slop_matches_nearest_within_tolerance():
    s = StampSynchronizer(2, queue_size=5, slop_ns=10)
    s.add(1, 95, "far")
    s.add(1, 103, "near")
    out = s.add(0, 100, "d")
    assert out == [(100, ["d", "near"])]
    s2 = StampSynchronizer(2, queue_size=5, slop_ns=10)
    s2.add(1, 120, "x")
    assert s2.add(0, 100, "d") == []


def test_duplicates_counted_and_clear():
    s = StampSynchronizer(2, queue_size=5)
    s.add(0, 5, "a")
    s.add(0, 5, "b")
    assert s.duplicates == [1, 0]
    s.clear()
    assert s.pending() == [0, 0] and s.unmatched() == [1, 0]


def test_nearest_stamp_and_bad_arguments():
    assert nearest_stamp([10, 20, 30], 21, 0) is None
    assert nearest_stamp([10, 20, 30], 21, 1) == 20
    assert nearest_stamp([10, 20, 30], 26, 10) == 30
    assert nearest_stamp([], 5, 100) is None
    with pytest.raises(ValueError):
        StampSynchronizer(1)
    with pytest.raises(ValueError):
        StampSynchronizer(2, queue_size=0)
    with pytest.raises(IndexError):
        StampSynchronizer(2).add(2, 0, None)
