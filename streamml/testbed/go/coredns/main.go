// Command coredns is CoreDNS with only the plugins a test cluster's DNS needs: it answers for the
// cluster's zones from the Kubernetes API and forwards nothing (no `forward` plugin is linked), so
// a pod's lookup of any other name never leaves the node's network namespace.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	// The order in which the linked plugins handle a query, as in CoreDNS's own plugin.cfg.
	dnsserver.Directives = []string{
		"bind", "ready", "health", "errors", "loadbalance", "cache", "kubernetes",
	}
}

func main() {
	coremain.Run()
}
