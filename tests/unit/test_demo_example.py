"""examples/digits.yaml is what `make demo` applies: it must name the objects kubeslim_dev.demo seeds
and the input size its model was trained at (a mismatch would only surface as a failed demo)."""
from __future__ import annotations

import pytest
import yaml

from kubeslim_api.spec import parse_manifest
from kubeslim_dev import demo
from kubeslim_dev.devenv import REPO

pytestmark = pytest.mark.unit


def test_example_names_what_the_demo_seeds_at_its_size():
    _, spec = parse_manifest(yaml.safe_load((REPO / "examples" / "digits.yaml").read_text()))
    root = "s3://kubeslim-demo/digits"
    assert spec.model.custom.code == f"{root}/model/wide_cnn.py"
    assert spec.model.custom.weights == f"{root}/model/wide_cnn-{demo.SIZE}.pdparams"
    assert spec.model.input_shape == [1, demo.SIZE, demo.SIZE]
    pp = spec.data.preprocess
    assert pp.resize_short == pp.crop == demo.SIZE
    assert spec.data.calibration.uri == f"{root}/calibration-{demo.SIZE}.npz"
    assert spec.data.evaluation.uri == f"{root}/val-{demo.SIZE}/" and spec.data.evaluation.list_file == "val_list.txt"
