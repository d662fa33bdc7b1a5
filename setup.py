"""ament_python package that also installs with pip on a machine without ROS.

``colcon build`` puts console scripts in ``lib/mono_depth_ros`` (``ros2 run`` finds them there, see
setup.cfg); ``pip install -e .`` puts them in the venv's ``bin``. Only the runtime package
``mono_depth_ros`` is installed; ``training/`` runs from the repository
(``python -m training.train``).
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mono_depth_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")
         + glob("config/*.rviz")),
        (f"share/{PACKAGE}/models/default", glob("models/default/*")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="mono_depth_ros maintainers",
    maintainer_email="maintainers@mono-depth-ros.invalid",
    description="Dense depth from one camera (Eigen et al. 2014) for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            # ROS executables: stop handlers first, then the node module (ros/scripts.py)
            f"depth_node = {PACKAGE}.ros.scripts:depth_node",
            f"kitti_eval_node = {PACKAGE}.ros.scripts:kitti_eval_node",
            f"kitti_bag_player = {PACKAGE}.ros.scripts:kitti_bag_player",
            f"mono_depth_bringup = {PACKAGE}.ros.scripts:mono_depth_bringup",
            f"kitti_to_bag = {PACKAGE}.bags.kitti_to_bag:main",
            f"evaluate_bag = {PACKAGE}.bags.evaluate_bag:main",
            f"mono_depth_predict = {PACKAGE}.predict:main",
            f"mono_depth_benchmark = {PACKAGE}.benchmark:main",
        ],
    },
)
