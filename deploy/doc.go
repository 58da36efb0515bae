// Package deploy holds what runs vxrouter on a Kubernetes cluster:
// kube-vxrouter.yml, a DaemonSet in the shape of flannel's
// kube-flannel.yml. It has no code; its tests check the manifest against
// a real API server (a server-side dry run, and its RBAC role put to use).
package deploy
