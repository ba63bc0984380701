"""The CRD (crds/) and the typed spec model (kubeslim_api.spec) describe one API: keep them in step."""
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from kubeslim_api import spec as spec_mod

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "kubeslim.io_quantizationjobs.yaml"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


@pytest.fixture(scope="module")
def version(crd):
    (v,) = crd["spec"]["versions"]
    return v


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel inside Optional[...] / list[...], if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found:
            return found
    return None


def _walk(schema: dict[str, Any], model: type[BaseModel], path: str):
    """Yield (path, crd_schema, model_field) for every property, recursing into objects and into
    the objects of arrays."""
    props = schema.get("properties", {})
    by_alias = {f.alias or n: f for n, f in model.model_fields.items()}
    assert set(props) == set(by_alias), f"{path}: CRD has {sorted(set(props) - set(by_alias))}, model has {sorted(set(by_alias) - set(props))}"
    for name, sub in props.items():
        field = by_alias[name]
        yield f"{path}.{name}", sub, field
        nested = _model_of(field.annotation)
        if nested is not None and "properties" in sub:
            yield from _walk(sub, nested, f"{path}.{name}")
        elif nested is not None and "properties" in sub.get("items", {}):
            yield from _walk(sub["items"], nested, f"{path}.{name}[]")


def _literal_values(annotation: Any) -> set:
    """The values of a Literal, also inside list[...] or Optional[...]."""
    if get_origin(annotation) is Literal:
        return set(get_args(annotation))
    return set().union(*(_literal_values(a) for a in get_args(annotation) if a is not type(None)))


def test_spec_fields_match_model_field_for_field(version):
    spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert list(_walk(spec_schema, spec_mod.QuantizationJobSpec, "spec"))


def test_every_spec_field_is_described(version):
    spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    undocumented = [p for p, sub, _ in _walk(spec_schema, spec_mod.QuantizationJobSpec, "spec") if not sub.get("description")]
    assert undocumented == []


def test_crd_defaults_equal_model_defaults(version):
    spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    checked = 0
    for path, sub, field in _walk(spec_schema, spec_mod.QuantizationJobSpec, "spec"):
        if "default" not in sub or sub["default"] == {}:
            continue
        model_default = field.get_default(call_default_factory=True)
        assert model_default == sub["default"], f"{path}: CRD default {sub['default']!r}, model default {model_default!r}"
        checked += 1
    assert checked >= 30


def test_enums_match_model_literals(version):
    spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for path, sub, field in _walk(spec_schema, spec_mod.QuantizationJobSpec, "spec"):
        enum = sub.get("enum") or sub.get("items", {}).get("enum")
        if not enum:
            continue
        assert _literal_values(field.annotation) == set(enum), path


def test_patterns_match_model_patterns(version):
    spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    checked = 0
    for path, sub, field in _walk(spec_schema, spec_mod.QuantizationJobSpec, "spec"):
        model_patterns = [m.pattern for m in field.metadata if getattr(m, "pattern", None)]
        assert model_patterns == ([sub["pattern"]] if "pattern" in sub else []), path
        checked += bool(model_patterns)
    assert checked >= 7


def test_printer_columns_show_accuracy_at_a_glance(version):
    cols = [c["name"].upper() for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert cols == ["PHASE", "STAGE", "PROGRESS", "ALGO", "FP32", "INT8", "DROP", "AGE"]



def test_wide_output_shows_the_output_cosine_where_status_carries_it(version):
    """`kubectl get qj -o wide`: the chosen int8 model's worst output cosine, for any metric."""
    (col,) = [c for c in version["additionalPrinterColumns"] if c["name"] == "Cosine"]
    assert col["priority"] == 1 and col["type"] == "number"
    assert col["jsonPath"] == ".status.results.int8.fidelity.cosine"
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["results"]["properties"]
    assert "cosine" in status["int8"]["properties"]["fidelity"]["properties"]      # not pruned by the API server


def test_names_and_status_subresource(crd, version):
    assert crd["spec"]["group"] == "kubeslim.io"
    assert crd["spec"]["names"]["kind"] == "QuantizationJob"
    assert crd["spec"]["names"]["shortNames"] == ["qj"]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}


def test_algo_list_is_the_allowed_set_without_min_max(version):
    algos = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["quantization"]["properties"]["algos"]
    assert set(algos["items"]["enum"]) == set(get_args(spec_mod.Algo))
    assert "min_max" not in algos["items"]["enum"]
