"""Depth node on a KITTI camera: ``ros2 launch mono_depth_ros depth.launch.py [model:=M]
[backend:=auto|tensorrt|onnxruntime|torch] [namespace:=NS] [config:=FILE]``.

Parameters come from ``config/kitti_eval.yaml`` (section ``depth_node``) and topics are remapped
to kitti2bag's names, exactly as ``mono_depth_bringup`` does with the same file.
"""

import os

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "mono_depth_ros"


def graph_node(config_path, name):
    """(parameters, remappings) of node ``name`` in a bring-up YAML."""
    with open(config_path) as f:
        data = yaml.safe_load(f)
    spec = next(n for n in data["bringup"]["nodes"] if n["name"] == name)
    params = dict((data.get(name) or {}).get("ros__parameters") or {})
    return params, list((spec.get("remappings") or {}).items())


def _setup(context):
    config = LaunchConfiguration("config").perform(context)
    params, remaps = graph_node(config, "depth_node")
    model = LaunchConfiguration("model").perform(context)
    if model:
        params["checkpoint"] = model
    params["backend"] = LaunchConfiguration("backend").perform(context)
    return [Node(package=PACKAGE, executable="depth_node", name="depth_node",
                 namespace=LaunchConfiguration("namespace"), parameters=[params],
                 remappings=remaps, output="screen")]


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([
        # Camera-size images need Fast DDS's larger shared-memory segment in EVERY process of
        # the graph (docs/depth_node.md); an already exported profile wins.
        DeclareLaunchArgument("dds_profile", default_value=os.environ.get(
            "FASTDDS_DEFAULT_PROFILES_FILE",
            os.path.join(share, "config", "fastdds_large_images.xml")),
            description="Fast DDS XML profile for large images"),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("dds_profile")),
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config",
                                                                   "kitti_eval.yaml")),
        DeclareLaunchArgument("model", default_value="", description="checkpoint (.pt); "
                              "empty = the shipped default model"),
        DeclareLaunchArgument("backend", default_value="auto",
                              description="auto | tensorrt | onnxruntime | torch"),
        DeclareLaunchArgument("namespace", default_value=""),
        OpaqueFunction(function=_setup),
    ])
