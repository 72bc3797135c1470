# The targets operator-sdk and kubebuilder users type, for this repository's operators. Each is
# a thin call of `cargo xtask` (run `cargo xtask --help`), cargo or kubectl; `make help` lists
# them. A project made with `operon init` gets a Makefile of its own with the same targets.

# The operators `install`, `uninstall`, `docker-build` and `docker-push` act on.
OPERATORS ?= pod-operator service-ca-operator credentials-operator
# The custom resources `undeploy` deletes first, so that the running operators finalize them.
CUSTOM_RESOURCES ?= podrequests.pod.jewzaam.org,credentialsrequests.cloudcredential.openshift.io
# `docker-push` copies the images to $(REGISTRY)/operon/<operator>:v<the operator's version>.
REGISTRY ?=
# The local cluster's kubectl and kubeconfig when there are (`cargo xtask cluster up`).
KUBECTL ?= $(firstword $(wildcard $(HOME)/.cache/operon/k8s/*/bin/kubectl) kubectl)
ifneq ($(wildcard .operon/kubeconfig),)
export KUBECONFIG ?= $(CURDIR)/.operon/kubeconfig
endif
CARGO ?= cargo
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
UNDEPLOY_TIMEOUT ?= 120s

.DEFAULT_GOAL := help

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} \
	  /^[a-zA-Z_-]+:.*?##/ { printf "  %-14s %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: build
build: ## Build every binary of the workspace.
	$(CARGO) build --workspace --bins

.PHONY: fmt
fmt: ## Format the code.
	$(CARGO) fmt --all

.PHONY: manifests
manifests: ## Generate config/, bundle/ and charts/ from the operators' Rust types.
	$(CARGO) xtask manifests

.PHONY: lint
lint: ## Formatting, clippy with warnings denied, generated files in sync.
	$(CARGO) xtask lint

.PHONY: test
test: ## Every test, on a local control plane with a real node (installs what is missing).
	$(CARGO) xtask test

.PHONY: run
run: ## The local cluster, the operators deployed from their images and the talk's sample.
	$(CARGO) xtask up

.PHONY: cluster-up
cluster-up: ## Start the local control plane and its real node in the background.
	$(CARGO) xtask cluster up

.PHONY: cluster-down
cluster-down: ## Stop the local control plane.
	$(CARGO) xtask cluster down

##@ Deployment

.PHONY: install
install: ## Install the operators' CRDs into the cluster of $KUBECONFIG.
	for op in $(OPERATORS); do $(KUBECTL) apply --server-side -k config/$$op/crd || exit 1; done

.PHONY: uninstall
uninstall: ## Remove the operators' CRDs (and so every custom resource) from the cluster.
	for op in $(OPERATORS); do $(KUBECTL) delete --ignore-not-found -k config/$$op/crd || exit 1; done

.PHONY: deploy
deploy: ## Build the images, push them to the local cluster's registry, apply config/default.
	$(CARGO) xtask deploy

.PHONY: undeploy
undeploy: ## Delete the custom resources (the operators finalize them), then config/default.
	$(KUBECTL) delete $(CUSTOM_RESOURCES) --all --all-namespaces --ignore-not-found --wait --timeout=$(UNDEPLOY_TIMEOUT)
	$(KUBECTL) delete --ignore-not-found -k config/default

.PHONY: docker-build
docker-build: ## Build the operators' release images as OCI archives (no container engine).
	$(CARGO) xtask image --profile release $(OPERATORS)

.PHONY: docker-push
docker-push: ## Copy the built images to $(REGISTRY)/operon/<operator>:v<version>.
	@test -n "$(REGISTRY)" || { echo "set REGISTRY, e.g. make docker-push REGISTRY=registry.example.com" >&2; exit 2; }
	for op in $(OPERATORS); do \
	  version=$$(sed -n 's/^version = "\(.*\)"/\1/p' operators/$$op/Cargo.toml | head -n 1); \
	  skopeo copy oci-archive:$(TARGET_DIR)/images/$$op.oci.tar docker://$(REGISTRY)/operon/$$op:v$$version || exit 1; \
	done

.PHONY: bundle
bundle: manifests ## Generate the OLM bundles under bundle/ (with config/ and charts/).
