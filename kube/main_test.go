package kube

import (
	"testing"

	"vxrouter/internal/nettest"
)

// TestMain sweeps what a killed run left (nettest.Main); tag "k".
func TestMain(m *testing.M) { nettest.Main(m, "k") }
