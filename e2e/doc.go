// Package e2e holds vxrouter's end-to-end tests: real vxrouter processes,
// real TUN devices, veth pairs, bridges and the kernel's own vxlan devices
// in network namespaces, and a real (embedded) etcd; the Kubernetes
// mode's (kube_test.go) add a real kube-apiserver in a host of its own
// (VXROUTER_KUBE_APISERVER, built by .ci/kube-apiserver/build.sh).
//
// The tests need root and skip without it. Each builds the vxrouter binary
// once, gives every lab a prefix of its own, and removes its namespaces,
// processes and files when it ends, also when it fails. Run them alone with
//
//	go test -count=1 -v ./e2e/
//
// A failing test prints the logs of the vxrouter nodes it ran.
package e2e
