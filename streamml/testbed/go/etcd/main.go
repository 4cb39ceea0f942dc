// Command etcd is the upstream etcd server, built from the version kube-apiserver itself depends on,
// for machines whose distribution ships an etcd older than the API server accepts.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
