"""Shared fixtures. Any rclpy started by a test talks over loopback only (no multicast)."""

import os
import sys
from pathlib import Path

import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "kitti_sample"
DRIVE_0001 = SAMPLE / "2011_09_26" / "2011_09_26_drive_0001_sync"
DRIVE_0005 = SAMPLE / "2011_09_26" / "2011_09_26_drive_0005_sync"

if str(REPO) not in sys.path:  # `training` runs from the repository, it is not installed
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def sample() -> Path:
    return SAMPLE
