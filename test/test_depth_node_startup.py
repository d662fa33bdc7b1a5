"""depth_node start-up failures (one line, non-zero exit) and the shipped parameter file.

Each failing start runs the console script in its own process (ROS_DOMAIN_ID 61, loopback only).
"""

import dataclasses
import subprocess

import pytest
import yaml

pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy) is not installed")

from depth_node_harness import REPO, node_command, ros_env  # noqa: E402

from mono_depth_ros.config import (BackendConfig, DepthNodeConfig,  # noqa: E402
                                   ScaleConfig)

DOMAIN_ID = 61


def run_node(*params, timeout=120):
    """Start depth_node with these -p values; it must exit on its own (a start-up failure)."""
    args = [a for p in params for a in ("-p", p)]
    return subprocess.run(node_command() + ["--ros-args", *args], env=ros_env(DOMAIN_ID),
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def error_lines(res):
    return [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]


def test_missing_model_exits_non_zero_with_one_line(tmp_path):
    res = run_node(f"checkpoint:={tmp_path / 'missing.pt'}", "backend:=torch")
    assert res.returncode != 0
    lines = error_lines(res)
    assert len(lines) == 1 and "model file not found" in lines[0], lines


def test_corrupt_model_exits_non_zero_with_one_line(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"this is not a checkpoint" * 10)
    res = run_node(f"checkpoint:={bad}", "backend:=torch")
    assert res.returncode != 0
    lines = error_lines(res)
    assert len(lines) == 1 and "not a readable checkpoint" in lines[0], lines


@pytest.mark.parametrize("param,words", [
    ("max_depth:=-5.0", "out of range"),
    ("max_depth:=80", "expecting type 'DOUBLE'"),
    ("scale.mode:=sky", "not one of"),
    ("output_width:=320", "both"),
])
def test_invalid_start_parameters_exit_non_zero_with_one_line(param, words):
    res = run_node(param)
    assert res.returncode != 0
    lines = error_lines(res)
    assert len(lines) == 1 and words in lines[0], lines


def test_parameter_file_matches_the_node_defaults():
    data = yaml.safe_load((REPO / "config/depth_node.yaml").read_text())
    params = data["depth_node"]["ros__parameters"]
    defaults = {f.name: f.default for cls in (DepthNodeConfig, BackendConfig)
                for f in dataclasses.fields(cls)}
    defaults |= {"scale." + f.name: f.default for f in dataclasses.fields(ScaleConfig)}
    for key, value in params.items():
        assert key in defaults, f"{key} in depth_node.yaml is not a parameter of the node"
        assert value == defaults[key] and type(value) is type(defaults[key]), key
    for f in dataclasses.fields(DepthNodeConfig):
        assert f.name in params, f"depth_node.yaml lacks {f.name}"


def test_docs_list_every_node_parameter():
    doc = (REPO / "docs/depth_node.md").read_text()
    for cls in (DepthNodeConfig, BackendConfig):
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in doc, f"docs/depth_node.md lacks parameter {f.name}"
