"""The shipped model is what `make train` makes: config/train_default.yaml holds its recipe.

The model card promises that `python -m training.train --config config/train_default.yaml`
reproduces the shipped weights (up to floating point); this checks the promise against the
settings recorded inside the shipped checkpoint, so a recipe change without a retrained model
(or the other way round) fails here.
"""

import json
from dataclasses import asdict
from pathlib import Path

import torch

from training.options import parse

ROOT = Path(__file__).resolve().parents[1]
# Where the run wrote its files says nothing about the model.
RUN_LOCATION = {"out_dir"}


def _shipped():
    ckpt = torch.load(ROOT / "models/default/model.pt", map_location="cpu", weights_only=True)
    return ckpt["model_config"], ckpt["meta"]["train_config"]


def test_yaml_recipe_is_the_shipped_checkpoints_recipe():
    train, model, _ = parse(["--config", str(ROOT / "config/train_default.yaml")])
    shipped_model, shipped_train = _shipped()
    ours = json.loads(json.dumps(asdict(train)))  # tuples -> lists, as stored
    differ = {k: (ours.get(k), v) for k, v in shipped_train.items()
              if k not in RUN_LOCATION and ours.get(k) != v}
    assert not differ, f"YAML train section vs the shipped checkpoint (yaml, shipped): {differ}"
    ours_model = asdict(model)
    differ = {k: (ours_model.get(k), v) for k, v in shipped_model.items()
              if not k.startswith("camera_") and ours_model.get(k) != v}
    assert not differ, f"YAML model section vs the shipped checkpoint (yaml, shipped): {differ}"
