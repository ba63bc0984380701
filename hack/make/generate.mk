# Generated files (api/kubeslim_api/crdgen.py says what comes from where and why).
.PHONY: generate

generate: $(VENV)/.installed ## write the CRD (crds/, helm/kubeslim/crds/) from api/kubeslim_api/spec.py and the chart's RBAC rules from operator/rbac/
	$(PY) -m kubeslim_api.crdgen
