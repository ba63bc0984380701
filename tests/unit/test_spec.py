import json

import pytest

from kubeslim_api.spec import SpecError, parse_manifest, parse_spec
from tests.invalid_specs import API_SERVER_ONLY, INVALID_SPECS, MODEL_CHECKED_SPECS, VALID_SPEC, invalid_spec


def test_valid_spec_gets_the_documented_defaults():
    spec = parse_spec(VALID_SPEC)
    assert spec.model.source == "builtin"
    assert spec.quantization.algos == ["hist"]
    assert spec.calibration_samples == 32 * 10
    assert spec.verification.max_accuracy_drop == 0.01
    assert spec.storage.credentials_secret is None
    assert spec.run_policy.backoff_limit == 1
    assert spec.data.preprocess.mean == [0.485, 0.456, 0.406]


@pytest.mark.parametrize("case_id, mutate, field", MODEL_CHECKED_SPECS, ids=[c[0] for c in MODEL_CHECKED_SPECS])
def test_invalid_spec_is_rejected_naming_the_field(case_id, mutate, field):
    with pytest.raises(SpecError) as err:
        parse_spec(invalid_spec(mutate))
    assert field in str(err.value)


@pytest.mark.parametrize("case_id, mutate", [(c[0], c[1]) for c in INVALID_SPECS if c[0] in API_SERVER_ONLY])
def test_pod_rules_are_left_to_the_api_server(case_id, mutate):
    """The core/v1 toleration/affinity/annotation rules live once, as the CRD's CEL (checked against
    the real API server in tests/cluster/test_crd_validation.py): the model parses such a spec."""
    parse_spec(invalid_spec(mutate))


def test_unknown_field_is_rejected_not_ignored():
    with pytest.raises(SpecError, match="spec.quantization.algo"):
        parse_spec({**VALID_SPEC, "quantization": {"algo": ["hist"]}})


def test_the_operator_drops_fields_a_newer_crd_added_at_every_level():
    """A CRD upgraded before the operator (Argo CD, Flux) defaults fields this model lacks into
    every object: the operator parses the rest, so running QuantizationJobs are not failed."""
    known = json.loads(json.dumps(VALID_SPEC))
    known["model"] = {"builtin": known["model"]["builtin"], "inputs": [{"name": "x", "shape": [1, 28, 28]}]}
    newer = json.loads(json.dumps(known))
    newer["fromANewerCrd"] = True
    newer["quantization"] = {"newKnob": "auto"}
    newer["model"]["inputs"][0]["laterField"] = 1
    assert parse_spec(newer, drop_unknown=True) == parse_spec(known)
    with pytest.raises(SpecError, match="Extra inputs are not permitted"):
        parse_spec(newer)


def test_dropping_unknown_fields_still_refuses_a_bad_known_one():
    spec = json.loads(json.dumps(VALID_SPEC)) | {"fromANewerCrd": 1}
    spec["quantization"] = {**spec.get("quantization", {}), "batchSize": 0}
    with pytest.raises(SpecError, match="batchSize"):
        parse_spec(spec, drop_unknown=True)


def test_samples_override_and_s3_uris_keyed_by_field():
    spec = parse_spec({**VALID_SPEC, "data": {**VALID_SPEC["data"], "calibration": {"uri": "s3://d/c.npz", "format": "npz", "samples": 7}}})
    assert spec.calibration_samples == 7
    assert spec.s3_uris()["spec.data.calibration.uri"] == "s3://d/c.npz"
    assert "spec.model.builtin.weights" not in spec.s3_uris()


def test_manifest_must_be_a_quantization_job():
    with pytest.raises(SpecError, match="kind"):
        parse_manifest({"kind": "Job", "spec": VALID_SPEC})
    meta, spec = parse_manifest({"kind": "QuantizationJob", "metadata": {"name": "x"}, "spec": VALID_SPEC})
    assert meta["name"] == "x" and spec.output.uri == "s3://models/digits/int8/"


def test_calibration_from_an_image_prefix_needs_no_list_file_and_no_labels():
    spec = parse_spec({**VALID_SPEC, "data": {**VALID_SPEC["data"], "calibration": {"uri": "s3://d/imgs/", "format": "imagePrefix"}}})
    assert spec.data.calibration.format == "imagePrefix" and spec.data.calibration.list_file is None
    assert not spec.needs_labels("calibration") and spec.needs_labels("evaluation")


def test_preprocess_fields_left_out_stay_left_out_through_the_operator_dump():
    """The operator hands the pod model_dump_json(); the job must still know what the user set."""
    for preprocess, given in [(None, set()), ({}, set()), ({"crop": 28, "channelOrder": "BGR"}, {"crop", "channel_order"})]:
        raw = {**VALID_SPEC, "data": {**VALID_SPEC["data"], **({} if preprocess is None else {"preprocess": preprocess})}}
        spec = parse_spec(json.loads(parse_spec(raw).model_dump_json(by_alias=True)))
        assert spec.data.preprocess.model_fields_set == given
        assert spec.data.preprocess.crop == (28 if given else 224) and spec.data.preprocess.mean == [0.485, 0.456, 0.406]


def test_named_inputs_replace_the_input_shape_with_dynamic_dimensions_and_dtypes():
    model = {"builtin": VALID_SPEC["model"]["builtin"],
             "inputs": [{"name": "image", "shape": [3, -1, -1]}, {"name": "scale_factor", "shape": [2]},
                        {"name": "input_ids", "shape": [-1], "dtype": "int64"}]}
    spec = parse_spec({**VALID_SPEC, "model": model})
    assert [(i.name, i.shape, i.dtype) for i in spec.model.inputs] == [
        ("image", [3, -1, -1], "float32"), ("scale_factor", [2], "float32"), ("input_ids", [-1], "int64")]
    assert spec.model.input_shape is None


@pytest.mark.parametrize("metric, labels", [("top1", True), ("top5", True), ("agreement", False), ("fidelity", False)])
def test_only_accuracy_metrics_read_evaluation_labels(metric, labels):
    spec = parse_spec({**VALID_SPEC, "verification": {"metric": metric}})
    assert spec.needs_labels("evaluation") is labels and not spec.needs_labels("calibration")
    assert spec.verification.min_cosine == 0.99


def test_fidelity_evaluates_on_an_unlabelled_image_prefix():
    data = {**VALID_SPEC["data"], "evaluation": {"uri": "s3://d/imgs/", "format": "imagePrefix"}}
    assert parse_spec({**VALID_SPEC, "data": data, "verification": {"metric": "fidelity"}}).data.evaluation.format == "imagePrefix"
