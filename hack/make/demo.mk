.PHONY: demo
demo: ## set everything up and run a real QuantizationJob end to end (examples/digits.yaml)
	@$(REPO)/hack/demo.sh
