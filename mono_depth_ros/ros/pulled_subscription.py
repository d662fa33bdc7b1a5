"""Subscriptions that one worker thread pulls from, instead of the executor pushing to callbacks.

depth_node's worker needs one image per inference while a camera may send several. A normal
subscription has the executor take (copy into Python) every message and the node then throws
most away; here the executor never sees the subscription: DDS keeps the newest samples (keep
last ``depth``) and the worker takes one when it is free, so a frame it will not process costs no
copy, no Python callback and no GIL. With depth 1 ``take`` gives the newest message; skipped
ones are counted from the publishers' sequence numbers. The worker reads camera_info the same
way, so an image and its camera_info never race between two threads.

Uses rclpy's own building blocks (``_rclpy.Subscription``, ``_rclpy.WaitSet``), as
``rclpy.wait_for_message`` does; names are resolved and remapped by rcl as for any subscription.
"""

from __future__ import annotations

import threading
import time

from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.qos import HistoryPolicy, QoSProfile


class PulledSubscription:
    """A keep-last-``depth`` subscription that one consumer thread takes messages from."""

    def __init__(self, node, msg_type, topic: str, qos: QoSProfile, depth: int = 1,
                 raw: bool = False):
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                         reliability=qos.reliability, durability=qos.durability)
        msg_type.__class__.__import_type_support__()  # as Node.create_subscription does
        with node.handle:
            self._sub = _rclpy.Subscription(node.handle, msg_type, topic,
                                            qos.get_c_qos_profile())
        self._wait_set = _rclpy.WaitSet(1, 1, 0, 0, 0, 0, node.context.handle)
        self._wake = _rclpy.GuardCondition(node.context.handle)  # close() ends a wait at once
        self._type, self._raw = msg_type, raw
        self._last_seq: dict[bytes, int] = {}  # publisher gid -> last sequence number taken
        self._lock = threading.Lock()  # take vs close
        self._closing = False  # set by close(): takes return None from then on
        self.taken = 0
        self.skipped = 0  # published (by a publisher seen before) but never taken

    def take(self, timeout: float = 0.0):
        """``(message, received_ns)`` of the oldest message DDS holds (with depth 1: the
        newest one), waiting up to ``timeout`` seconds for one; None on timeout or once closed.
        ``received_ns`` is DDS's reception time (system clock, ns), or the take time where the
        middleware gives none."""
        with self._lock:
            if self._closing:
                return None
            with self._sub, self._wait_set:
                taken = self._sub.take_message(self._type, self._raw)
                if taken is None and timeout > 0:
                    self._wait_set.clear_entities()
                    self._wait_set.add_subscription(self._sub)
                    self._wait_set.add_guard_condition(self._wake)
                    self._wait_set.wait(int(timeout * 1e9))  # releases the GIL
                    if self._closing:
                        return None
                    taken = self._sub.take_message(self._type, self._raw)
        if taken is None:
            return None
        msg, info = taken
        self._count(info)
        return msg, info.get("received_timestamp") or time.time_ns()

    def _count(self, info: dict) -> None:
        gid = bytes(info.get("publisher_gid", {}).get("data", b""))
        seq = info.get("publication_sequence_number")
        if isinstance(seq, int) and seq > 0:
            last = self._last_seq.get(gid)
            if last is not None and seq > last:
                self.skipped += seq - last - 1
            self._last_seq[gid] = seq
        self.taken += 1

    def close(self) -> None:
        """Wake a ``take`` in progress (it returns None) and destroy the subscription; a second
        call does nothing."""
        if self._closing:
            return
        self._closing = True
        self._wake.trigger_guard_condition()
        with self._lock:  # after the woken take has returned
            self._wait_set.destroy_when_not_in_use()
            self._sub.destroy_when_not_in_use()
            self._wake.destroy_when_not_in_use()
