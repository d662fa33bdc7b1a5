"""Code style, as the ROS package template's test_flake8 does (plain flake8, setup.cfg rules)."""

import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.linter
def test_flake8():
    pytest.importorskip("flake8", reason="flake8 is missing: pip install -r requirements.txt")
    proc = subprocess.run([sys.executable, "-m", "flake8", "mono_depth_ros", "training", "test",
                           "launch", "setup.py"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, f"flake8 found style problems:\n{proc.stdout}{proc.stderr}"
