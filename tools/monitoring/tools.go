// Package tools pins the monitoring stack's Go programs: the Prometheus Operator with its
// config reloader sidecar, and kube-state-metrics. The blank imports keep them in go.mod;
// the build tag keeps this file out of every build, since main packages can't be imported.
//
// Built by `cargo xtask k8s build` by import path, beside the Kubernetes binaries. Prometheus,
// Alertmanager and node_exporter come from Debian's packages instead (see
// crates/cluster/src/node/images.rs).

//go:build tools

package tools

import (
	_ "github.com/prometheus-operator/prometheus-operator/cmd/operator"
	_ "github.com/prometheus-operator/prometheus-operator/cmd/prometheus-config-reloader"
	_ "k8s.io/kube-state-metrics/v2"
)
