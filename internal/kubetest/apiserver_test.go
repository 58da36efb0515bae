package kubetest

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// TestStart: the API server comes up on an embedded etcd, answers the
// admin, and refuses a token it does not know.
func TestStart(t *testing.T) {
	a := New(t, Options{})
	c, err := kubernetes.NewForConfig(a.REST(""))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatalf("admin: %v", err)
	}
	bad, _ := kubernetes.NewForConfig(a.REST("not-a-token"))
	if _, err := bad.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
		t.Fatal("an unknown token was let in")
	}
}
