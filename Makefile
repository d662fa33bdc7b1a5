# Two commands on a fresh machine: `make demo` and `make test`. Both create or reuse .venv
# (Python 3.11), install the pinned requirements and this package (editable) into it.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt setup.py setup.cfg | sha256sum | cut -c1-12)

# Every process that starts rclpy here talks over loopback only (no multicast off the machine),
# and uses the Fast DDS profile that lets camera-size images cross process boundaries.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export RMW_IMPLEMENTATION := rmw_fastrtps_cpp
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_large_images.xml

.PHONY: venv test demo train crossval evaluate export benchmark clean

$(STAMP): requirements.txt setup.py setup.cfg
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

test: venv
	ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-41} $(BIN)/python -m pytest test -q -ra

demo: venv
	ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-42} $(BIN)/python -m mono_depth_ros.demo --out demo_output

train: venv
	$(BIN)/python -m training.train --config config/train_default.yaml

crossval: venv
	$(BIN)/python -m training.crossval --config config/train_default.yaml --folds 3 --seeds 2 \
	    --coarse-epochs 12 --fine-epochs 6 --per-drive-cap 6 --out runs/crossval

evaluate: venv
	$(BIN)/python -m training.evaluate --checkpoint models/default/model.pt --out outputs/eval

export: venv
	$(BIN)/python -m training.export --checkpoint models/default/model.pt --out models/default

# The speed figures of README "Measured figures" and docs/runtime.md (issue 12), one command each.
benchmark: venv
	$(BIN)/python -m mono_depth_ros.benchmark --threads 2
	ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-43} $(BIN)/python -m mono_depth_ros.ros.node_benchmark --frames 1000 --backend auto
	$(BIN)/python -m mono_depth_ros.int8_eval

clean:
	rm -rf build install log outputs demo_output .pytest_cache
