"""Stamp synchroniser for several message streams (message_filters is not on PyPI).

Pure Python, no rclpy: the evaluation node feeds it ``(input index, stamp in ns, message)`` and
gets back complete tuples. Exact matching (``slop_ns == 0``) pairs messages whose stamps are equal,
like ``message_filters.TimeSynchronizer``; with ``slop_ns > 0`` the other inputs may differ from
input 0 (the anchor) by at most ``slop_ns``, nearest stamp first. Each input keeps at most
``queue_size`` messages; what falls out of a queue, or is older than a match (streams are assumed
to arrive in stamp order, as from a bag or a driver), is counted as unmatched.
"""

from __future__ import annotations

import bisect
import threading
from typing import Any, Callable, Sequence


def nearest_stamp(sorted_stamps: Sequence[int], stamp: int, slop_ns: int = 0) -> int | None:
    """The element of ``sorted_stamps`` nearest to ``stamp`` if within ``slop_ns``, else None."""
    i = bisect.bisect_left(sorted_stamps, stamp)
    best = None
    for j in (i - 1, i):
        if 0 <= j < len(sorted_stamps):
            d = abs(sorted_stamps[j] - stamp)
            if d <= slop_ns and (best is None or d < abs(best - stamp)):
                best = sorted_stamps[j]
    return best


class StampSynchronizer:
    """Bounded-buffer synchroniser of ``n_inputs`` streams.

    ``add(i, stamp_ns, msg)`` returns the list of tuples completed by this message (each a list of
    messages in input order, plus the anchor stamp) and also passes each to ``callback`` if given.
    """

    def __init__(self, n_inputs: int, queue_size: int = 30, slop_ns: int = 0,
                 callback: Callable[[int, list[Any]], None] | None = None):
        if n_inputs < 2:
            raise ValueError("a synchroniser needs at least two inputs")
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if slop_ns < 0:
            raise ValueError("slop must not be negative")
        self.n = n_inputs
        self.queue_size = queue_size
        self.slop_ns = int(slop_ns)
        self.callback = callback
        self._queues: list[dict[int, Any]] = [dict() for _ in range(n_inputs)]
        self._lock = threading.Lock()
        self.matched = 0
        self.dropped = [0] * n_inputs     # evicted without a match
        self.received = [0] * n_inputs
        self.duplicates = [0] * n_inputs  # a second message with a stamp already queued

    # ----------------------------------------------------------------------------------------
    def add(self, index: int, stamp_ns: int, msg: Any) -> list[tuple[int, list[Any]]]:
        if not 0 <= index < self.n:
            raise IndexError(f"input {index} of a {self.n}-input synchroniser")
        with self._lock:
            self.received[index] += 1
            q = self._queues[index]
            if stamp_ns in q:
                self.duplicates[index] += 1
            q[stamp_ns] = msg
            if len(q) > self.queue_size:
                oldest = min(q)
                del q[oldest]
                self.dropped[index] += 1
            out = self._match()
        for stamp, msgs in out:
            if self.callback is not None:
                self.callback(stamp, msgs)
        return out

    def _match(self) -> list[tuple[int, list[Any]]]:
        out = []
        for anchor in sorted(self._queues[0]):
            picks = [anchor]
            for q in self._queues[1:]:
                if self.slop_ns == 0:
                    s = anchor if anchor in q else None
                else:
                    s = nearest_stamp(sorted(q), anchor, self.slop_ns)
                if s is None:
                    break
                picks.append(s)
            else:
                msgs = [self._queues[i].pop(s) for i, s in enumerate(picks)]
                self.matched += 1
                # everything older than the match can no longer be matched (ordered streams)
                for i, q in enumerate(self._queues):
                    for s in [s for s in q if s < picks[i]]:
                        del q[s]
                        self.dropped[i] += 1
                out.append((anchor, msgs))
        return out

    # ----------------------------------------------------------------------------------------
    def pending(self) -> list[int]:
        """Messages per input still waiting for partners."""
        with self._lock:
            return [len(q) for q in self._queues]

    def unmatched(self) -> list[int]:
        """Per input: dropped so far plus still pending (what a final report calls unmatched)."""
        with self._lock:
            return [d + len(q) for d, q in zip(self.dropped, self._queues)]

    def clear(self) -> None:
        with self._lock:
            for i, q in enumerate(self._queues):
                self.dropped[i] += len(q)
                q.clear()
