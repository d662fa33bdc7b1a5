"""The package as ROS tools see it: package.xml, and a real `colcon build` install tree."""

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import REPO

EXECUTABLES = ["depth_node", "kitti_eval_node", "kitti_bag_player", "kitti_to_bag",
               "evaluate_bag", "mono_depth_predict", "mono_depth_benchmark", "mono_depth_bringup"]


def test_package_xml_format3_ament_python():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "mono_depth_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root if e.tag.endswith("depend")}
    for dep in ("rclpy", "sensor_msgs", "python3-numpy", "python3-opencv",
                "ament_copyright", "ament_flake8", "ament_pep257", "python3-pytest"):
        assert dep in deps, dep
    # images go through ros/conversions.py; nothing imports cv_bridge (docs/bags_and_evaluation.md)
    assert "cv_bridge" not in deps
    assert not [p for p in (REPO / "mono_depth_ros").rglob("*.py") if "import cv_bridge" in
                p.read_text() or "from cv_bridge" in p.read_text()]


def test_runtime_does_not_import_training():
    offenders = [p for p in (REPO / "mono_depth_ros").rglob("*.py")
                 if "import training" in p.read_text() or "from training" in p.read_text()]
    assert not offenders


def test_colcon_build_install_tree(tmp_path):
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.exists():
        pytest.skip("colcon is not installed in this environment (pip install -r requirements.txt)")
    src = tmp_path / "src" / "mono_depth_ros"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "install", "log", "runs", "outputs", "demo_output",
        "__pycache__", "*.egg-info", ".pytest_cache", "data", "test"))
    env = dict(os.environ, PATH=f"{colcon.parent}:{os.environ['PATH']}")
    proc = subprocess.run([str(colcon), "build", "--base-paths", str(tmp_path / "src"),
                           "--build-base", str(tmp_path / "build"),
                           "--install-base", str(tmp_path / "install"),
                           "--event-handlers", "console_direct-"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    share = tmp_path / "install" / "mono_depth_ros" / "share" / "mono_depth_ros"
    assert (share / "package.xml").is_file()
    assert (tmp_path / "install/mono_depth_ros/share/ament_index/resource_index/packages/"
            "mono_depth_ros").is_file()
    for f in (REPO / "launch").glob("*.launch.py"):
        assert (share / "launch" / f.name).is_file(), f.name
    for f in (REPO / "config").iterdir():
        assert (share / "config" / f.name).is_file(), f.name
    assert (share / "models" / "default" / "model.pt").is_file()
    lib = tmp_path / "install" / "mono_depth_ros" / "lib" / "mono_depth_ros"
    for exe in EXECUTABLES:
        assert (lib / exe).is_file() and os.access(lib / exe, os.X_OK), exe
