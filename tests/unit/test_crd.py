"""The CRD (crds/ and the chart's copy) is generated from the typed spec (kubeslim_api.spec) by
`make generate` (kubeslim_api.crdgen): the committed files must be exactly what it writes, and the
generator must map pydantic's types, bounds and defaults onto a structural schema faithfully."""
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import pytest
import yaml
from pydantic import Field, StringConstraints

from kubeslim_api import crdgen
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


def test_committed_crd_chart_copy_and_rbac_are_what_make_generate_writes():
    stale = crdgen.stale(ROOT)
    assert stale == [], (f"{', '.join(stale)} differ from what api/kubeslim_api/spec.py, quantizationjob_crd_base.yaml and "
                         "operator/rbac/clusterrole.yaml generate: run `make generate` and commit the result "
                         "(never edit the generated files by hand)")


def test_chart_rbac_rules_are_the_operators_tested_rules():
    generated = yaml.safe_load((ROOT / "helm/kubeslim/files/rbac.yaml").read_text())["rules"]
    assert generated == yaml.safe_load((ROOT / "operator/rbac/clusterrole.yaml").read_text())["rules"]
    assert not any("secrets" in rule["resources"] for rule in generated)


class _Inner(spec_mod._Camel):
    size: int = Field(3, ge=1, le=8, description="How many.")


class _Outer(spec_mod._Camel):
    """A model that uses every mapping the generator makes."""
    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z]+$", description="Required: no default.")
    mode: Literal["auto", "off"] = "auto"
    ratio: float = Field(0.5, gt=0, le=1)
    limit: int | None = Field(None, ge=0, json_schema_extra={"format": "int64"})
    tags: list[Annotated[str, StringConstraints(max_length=9)]] = Field(default_factory=list, max_length=4)
    inner: _Inner = Field(default_factory=_Inner)
    client_side: _Inner = Field(default_factory=_Inner, json_schema_extra=spec_mod.NO_SERVER_DEFAULT)
    labels: spec_mod.Labels = Field(default_factory=dict, max_length=2, json_schema_extra=spec_mod.NO_SERVER_DEFAULT)
    free: dict[str, Any] = Field(default_factory=dict, json_schema_extra=spec_mod.NO_SERVER_DEFAULT)
    cpu: str = Field("4", json_schema_extra={"x-kubernetes-int-or-string": True})


def test_generator_maps_types_bounds_defaults_and_markers():
    schema = crdgen.model_schema(_Outer)
    props = schema["properties"]
    assert schema["required"] == ["name"]      # Optional or defaulted fields are not required
    assert props["name"] == {"type": "string", "description": "Required: no default.", "minLength": 1, "maxLength": 63,
                             "pattern": "^[a-z]+$"}
    assert props["mode"] == {"type": "string", "enum": ["auto", "off"], "default": "auto"}
    assert props["ratio"] == {"type": "number", "default": 0.5, "minimum": 0, "exclusiveMinimum": True, "maximum": 1}
    assert props["limit"] == {"type": "integer", "format": "int64", "minimum": 0}      # None is no default
    assert props["tags"] == {"type": "array", "default": [], "maxItems": 4, "items": {"type": "string", "maxLength": 9}}
    # A nested model defaults to {} so the API server applies its fields' own defaults; unless marked.
    assert props["inner"]["default"] == {} and props["inner"]["properties"]["size"] == {
        "type": "integer", "description": "How many.", "default": 3, "minimum": 1, "maximum": 8}
    assert "default" not in props["clientSide"] and "x-kubeslim-server-default" not in props["clientSide"]
    # A map's key pattern becomes a CEL rule over the keys; its values keep their own schema.
    (rule,) = props["labels"]["x-kubernetes-validations"]
    assert rule["rule"] == f'self.all(k, k.matches(r"{spec_mod.QUALIFIED_NAME}"))' and rule["message"].startswith("keys must be")
    assert props["labels"]["maxProperties"] == 2 and props["labels"]["additionalProperties"]["pattern"] == spec_mod.LABEL_VALUE
    assert props["free"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert props["cpu"] == {"x-kubernetes-int-or-string": True, "default": "4"}     # no type beside the marker


def test_generator_refuses_what_a_structural_schema_cannot_say():
    class _Either(spec_mod._Camel):
        value: int | str = 1

    with pytest.raises(crdgen.GeneratorError, match="unions"):
        crdgen.model_schema(_Either)


def _described(schema: dict[str, Any], path: str):
    """(path, has a description) for every property under schema, into objects and array items."""
    for name, sub in schema.get("properties", {}).items():
        yield f"{path}.{name}", bool(sub.get("description"))
        for nested in (sub, sub.get("items", {})):
            yield from _described(nested, f"{path}.{name}")


def test_every_spec_field_is_described(version):
    spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    undocumented = [p for p, described in _described(spec_schema, "spec") if not described]
    assert undocumented == [], "give these Fields a description= in api/kubeslim_api/spec.py (kubectl explain shows it)"


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
