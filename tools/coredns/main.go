// Command coredns is CoreDNS with only the plugins a local cluster's DNS uses: the
// `kubernetes` plugin answering for Services and Pods, and health, readiness, metrics, cache,
// logging and reload. Nothing forwards upstream: the cluster resolves its own names only.
//
// Built by `cargo xtask k8s build`; envtest runs it as the cluster's DNS add-on (kube-system/coredns).
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

func main() {
	coremain.Run()
}
