"""Fast DDS shared-memory files in ``/dev/shm``: remove this process's own on an abrupt exit, and
the ones dead processes left behind, so that crashes and kills do not fill the RAM-backed disk.

Every Fast DDS participant creates segments (``fastdds_<16 characters>``, 35 MB and 0.5 MB with
the large image profile of ``config/fastdds_large_images.xml``) and holds an ``flock`` on each
one's ``_el`` lock file while it lives. A participant that is destroyed removes them; a process
that leaves without destroying it (``os._exit`` during start-up, the teardown cut short after a
stop signal, SIGKILL, a crash) leaves them. ``remove_zombies`` is eProsima's ``fastdds shm clean``
rule (a lock file nobody holds belongs to a dead process), with an age limit so that a
participant being created at this moment, before it takes its lock, is never touched. Ports
(``fastdds_port<N>``, 52 kB) are left alone: a new participant may reopen a dead one's port at
any moment (Fast DDS then takes it over itself), so removing one could race with it. No rclpy
import: it runs before rclpy starts and inside ``os._exit`` paths.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from pathlib import Path

SHM_DIR = Path("/dev/shm")
SEGMENT_LOCK = re.compile(r"^fastdds_[0-9a-z]{16}_el$")
# a lock file younger than this may belong to a participant that has not locked it yet
MIN_AGE_S = 10.0


def uses_fast_dds() -> bool:
    """True when rclpy will talk over Fast DDS (the default RMW of ROS 2 Kilted)."""
    rmw = os.environ.get("RMW_IMPLEMENTATION", "")
    return rmw == "" or rmw.startswith("rmw_fastrtps")


def segment_files(segment: Path) -> tuple[Path, Path]:
    """A segment's two files: the data and its ``_el`` lock file."""
    return segment, segment.with_name(segment.name + "_el")


def _remove(segment: Path) -> int:
    """Unlink both files of ``segment`` (those still there); the bytes freed."""
    freed = 0
    for path in segment_files(segment):
        try:
            size = path.stat().st_size
            path.unlink()
            freed += size
        except OSError:
            continue
    return freed


def own_segments(shm_dir: Path = SHM_DIR) -> list[Path]:
    """Segment files whose lock this process holds (not ports: other processes use those)."""
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
    number of bytes freed."""
    return sum(_remove(segment) for segment in own_segments(shm_dir))


def _held_by_someone(lock: Path) -> bool:
    """True unless nobody holds ``lock`` (gone or unreadable count as held: left alone)."""
    try:
        fd = os.open(lock, os.O_RDONLY)  # (never creates it)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:  # a live process holds it
        return True
    finally:
        os.close(fd)


def dead_segments(shm_dir: Path = SHM_DIR, min_age_s: float = 0.0) -> list[Path]:
    """Segment files whose lock file nobody holds (their process is gone) and that are older
    than ``min_age_s``."""
    found = []
    now = time.time()
    try:
        names = os.listdir(shm_dir)
    except OSError:
        return found
    for name in names:
        if not SEGMENT_LOCK.match(name):
            continue
        lock = shm_dir / name
        try:
            if now - lock.stat().st_mtime < min_age_s or _held_by_someone(lock):
                continue
        except OSError:
            continue
        found.append(lock.with_name(name[:-3]))
    return sorted(found)


def remove_zombies(shm_dir: Path = SHM_DIR, min_age_s: float = MIN_AGE_S) -> int:
    """Remove the dead segments (``dead_segments``) older than ``min_age_s``, lock files
    included. Returns the number of bytes freed."""
    return sum(_remove(segment) for segment in dead_segments(shm_dir, min_age_s))
