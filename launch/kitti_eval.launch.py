"""Depth node + KITTI evaluation node, optionally a bag player and RViz:
``ros2 launch mono_depth_ros kitti_eval.launch.py [bag:=BAG] [rate:=1.0] [rviz:=true]
[calib_dir:=DIR] [output_dir:=DIR] [model:=M] [backend:=...] [namespace:=NS]``.

Same graph, parameters and remappings as ``mono_depth_bringup config/kitti_eval.yaml``.
"""

import os

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction,
                            SetEnvironmentVariable)
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "mono_depth_ros"


def _load(config_path):
    with open(config_path) as f:
        return yaml.safe_load(f)


def _setup(context):
    data = _load(LaunchConfiguration("config").perform(context))
    specs = {n["name"]: n for n in data["bringup"]["nodes"]}
    actions = []
    ev = specs["kitti_eval_node"]
    params = dict((data.get("kitti_eval_node") or {}).get("ros__parameters") or {})
    for arg in ("calib_dir", "output_dir"):
        value = LaunchConfiguration(arg).perform(context)
        if value:
            params[arg] = value
    actions.append(Node(package=PACKAGE, executable="kitti_eval_node", name="kitti_eval_node",
                        namespace=LaunchConfiguration("namespace"), parameters=[params],
                        remappings=list((ev.get("remappings") or {}).items()), output="screen"))
    bag = LaunchConfiguration("bag").perform(context)
    if bag:
        pl = specs["kitti_bag_player"]
        args = [bag, *pl.get("arguments", []), "--rate",
                LaunchConfiguration("rate").perform(context)]
        actions.append(Node(package=PACKAGE, executable="kitti_bag_player",
                            name="kitti_bag_player", arguments=args, output="screen"))
    return actions


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    config = LaunchConfiguration("config")
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
        DeclareLaunchArgument("bag", default_value="", description="bag to play (empty: none; "
                              "or run `ros2 bag play` yourself)"),
        DeclareLaunchArgument("rate", default_value="1.0"),
        DeclareLaunchArgument("rviz", default_value="false"),
        DeclareLaunchArgument("calib_dir", default_value=""),
        DeclareLaunchArgument("output_dir", default_value=""),
        DeclareLaunchArgument("model", default_value=""),
        DeclareLaunchArgument("backend", default_value="auto"),
        DeclareLaunchArgument("namespace", default_value=""),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(share, "launch", "depth.launch.py")),
            launch_arguments={"config": config, "model": LaunchConfiguration("model"),
                              "backend": LaunchConfiguration("backend"),
                              "namespace": LaunchConfiguration("namespace")}.items()),
        OpaqueFunction(function=_setup),
        Node(package="rviz2", executable="rviz2", name="rviz2",
             arguments=["-d", os.path.join(share, "config", "kitti_eval.rviz")],
             condition=IfCondition(LaunchConfiguration("rviz"))),
    ])
