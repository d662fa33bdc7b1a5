"""Launch files, bring-up YAML and RViz config name things that exist and agree (issue 6).
``launch``/``launch_ros`` are not on PyPI: importing the launch files is skipped without them."""

import ast
import importlib.util
import re

import pytest
import yaml

from mono_depth_ros.bags import topics
from mono_depth_ros.ros.bringup import entry_point_command, load_graph, node_command

from conftest import REPO

LAUNCH = sorted((REPO / "launch").glob("*.launch.py"))
CONSOLE = set(re.findall(r'f?"(\w+) = ', (REPO / "setup.py").read_text()))


def test_launch_files_parse_and_name_real_executables_and_files():
    assert {p.name for p in LAUNCH} >= {"depth.launch.py", "kitti_eval.launch.py"}
    for p in LAUNCH:
        tree = ast.parse(p.read_text())
        for call in ast.walk(tree):
            if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Node":
                kw = {k.arg: k.value for k in call.keywords}
                exe = kw["executable"].value
                pkg = kw["package"]
                if isinstance(pkg, ast.Constant) and pkg.value == "rviz2":
                    continue
                assert exe in CONSOLE, f"{p.name}: {exe} is not a console script"
        for name in re.findall(r'"([\w.]+\.(?:yaml|rviz|xml|launch\.py))"', p.read_text()):
            found = list(REPO.glob(f"*/{name}"))
            assert found, f"{p.name} names {name}, which is not in config/ or launch/"


def test_launch_files_set_the_large_image_dds_profile():
    """Camera-size images need the Fast DDS profile in every process the launch file starts."""
    for p in LAUNCH:
        calls = [c for c in ast.walk(ast.parse(p.read_text())) if isinstance(c, ast.Call)
                 and getattr(c.func, "id", "") == "SetEnvironmentVariable"]
        assert any(isinstance(c.args[0], ast.Constant)
                   and c.args[0].value == "FASTDDS_DEFAULT_PROFILES_FILE" for c in calls), p.name
        assert "fastdds_large_images.xml" in p.read_text(), p.name
    assert (REPO / "config" / "fastdds_large_images.xml").is_file()


def test_bringup_yaml_matches_topics_and_executables():
    g = load_graph(REPO / "config" / "kitti_eval.yaml")
    names = {n.name: n for n in g.nodes}
    assert set(names) == {"depth_node", "kitti_eval_node", "kitti_bag_player"}
    for n in g.nodes:
        assert n.executable in CONSOLE
        entry_point_command(n.executable)
    dn, ev = names["depth_node"], names["kitti_eval_node"]
    assert dn.remappings["image"] == topics.IMAGE_TOPIC == g.topics["image"]
    assert dn.remappings["camera_info"] == topics.CAMERA_INFO_TOPIC
    assert ev.remappings["lidar_points"] == topics.LIDAR_TOPIC == g.topics["lidar"]
    assert ev.remappings["depth"] == dn.remappings["depth"]
    assert ev.remappings["depth/camera_info"] == dn.remappings["depth/camera_info"]
    # kitti2bag master's layout (issue 11); the eval node relays a found camera to the same name
    assert g.topics["image"] == "/kitti/camera_color_left/image_raw"
    assert ev.parameters["relay_camera_to"] == dn.remappings["image"]
    # node parameters are known fields of their config dataclasses
    from mono_depth_ros.config import BackendConfig, EvalNodeConfig, from_dict
    from mono_depth_ros.config import DepthNodeConfig

    from_dict(EvalNodeConfig, ev.parameters)
    dn_fields = set(DepthNodeConfig.__dataclass_fields__) | set(BackendConfig.__dataclass_fields__)
    assert set(dn.parameters) <= dn_fields


def test_bringup_command_line(tmp_path):
    g = load_graph(REPO / "config" / "kitti_eval.yaml")
    ev = next(n for n in g.nodes if n.name == "kitti_eval_node")
    cmd = node_command(ev, "car1", tmp_path, overrides={"kitti_eval_node": {"calib_dir": "/c"}})
    assert "--ros-args" in cmd and "__ns:=/car1" in cmd
    assert f"lidar_points:={topics.LIDAR_TOPIC}" in cmd
    params = yaml.safe_load((tmp_path / "kitti_eval_node.yaml").read_text())
    assert params["kitti_eval_node"]["ros__parameters"]["calib_dir"] == "/c"


def test_rviz_config_shows_the_graph_topics():
    rviz = yaml.safe_load((REPO / "config" / "kitti_eval.rviz").read_text())
    shown = {d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"]
             if "Topic" in d}
    g = load_graph(REPO / "config" / "kitti_eval.yaml")
    dn = next(n for n in g.nodes if n.name == "depth_node")
    assert shown == {topics.IMAGE_TOPIC, topics.LIDAR_TOPIC, dn.remappings["depth/color"],
                     dn.remappings["depth/points"]}


@pytest.mark.parametrize("path", LAUNCH, ids=lambda p: p.name)
def test_launch_files_import_when_launch_is_installed(path):
    if importlib.util.find_spec("launch") is None or importlib.util.find_spec("launch_ros") is None:
        pytest.skip("launch / launch_ros are not installed (not on PyPI)")
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert callable(mod.generate_launch_description)
