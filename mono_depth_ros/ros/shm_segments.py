"""Fast DDS shared-memory files in ``/dev/shm``: remove this process's own on an abrupt exit, and
the ones dead processes left behind, so that crashes and kills do not fill the RAM-backed disk.

Every Fast DDS participant creates a segment (``fastdds_<16 characters>``, 35 MB with the large
image profile of ``config/fastdds_large_images.xml``) and holds an ``flock`` on its ``_el`` lock
file while it lives; ports (``fastdds_port<N>``) work the same way and are shared between
processes. A participant that is destroyed removes its files; a process that leaves without
destroying it (``os._exit`` during start-up, the teardown cut short after a stop signal, SIGKILL,
a crash) leaves them. ``remove_zombies`` is eProsima's ``fastdds shm clean`` rule (a lock file
nobody holds belongs to a dead process), with an age limit so that a participant being created
at this moment, before it takes its lock, is never touched. No rclpy import: it runs before
rclpy starts and inside ``os._exit`` paths.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from pathlib import Path

SHM_DIR = Path("/dev/shm")
SEGMENT_LOCK = re.compile(r"^fastdds_[0-9a-z]{16}_el$")
PORT_LOCK = re.compile(r"^fastdds_port\d{1,5}_el$")
# a lock file younger than this may belong to a participant that has not locked it yet
MIN_AGE_S = 10.0


def uses_fast_dds(env=None) -> bool:
    """True when rclpy will talk over Fast DDS (the default RMW of ROS 2 Kilted)."""
    rmw = (env if env is not None else os.environ).get("RMW_IMPLEMENTATION", "")
    return rmw == "" or rmw.startswith("rmw_fastrtps")


def own_segments(shm_dir: Path = SHM_DIR) -> list[Path]:
    """Segment files (not ports, which other processes share) whose lock this process holds."""
    found = []
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
        if target.parent == shm_dir and SEGMENT_LOCK.match(target.name):
            found.append(target.with_name(target.name[:-3]))
    return sorted(set(found))


def remove_own(shm_dir: Path = SHM_DIR) -> int:
    """Unlink this process's own segments and their lock files (for a process about to leave
    without destroying its participant); peers that mapped them keep their mapping. Returns the
    number of segments removed."""
    removed = 0
    for segment in own_segments(shm_dir):
        for path in (segment, segment.with_name(segment.name + "_el")):
            try:
                path.unlink()
            except OSError:
                continue
        removed += 1
    return removed


def _held_by_someone(lock: Path) -> bool:
    try:
        with open(lock, "ab") as fd:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:  # locked by a live process (or unreadable: leave it)
        return True


def remove_zombies(shm_dir: Path = SHM_DIR, min_age_s: float = MIN_AGE_S) -> int:
    """Remove segments and ports whose lock file nobody holds and that are older than
    ``min_age_s``: their process is gone. Returns the number of bytes freed."""
    freed = 0
    now = time.time()
    try:
        names = os.listdir(shm_dir)
    except OSError:
        return 0
    for name in names:
        is_port = bool(PORT_LOCK.match(name))
        if not (is_port or SEGMENT_LOCK.match(name)):
            continue
        lock = shm_dir / name
        try:
            if now - lock.stat().st_mtime < min_age_s or _held_by_someone(lock):
                continue
        except OSError:
            continue
        data = lock.with_name(name[:-3])
        paths = [data, lock]
        if is_port:
            paths.append(shm_dir / f"sem.{data.name}_mutex")
        for path in paths:
            try:
                size = path.stat().st_size
                path.unlink()
                freed += size
            except OSError:
                continue
    return freed
