package kubeproxy

import (
	"testing"

	"vxrouter/internal/nettest"
)

// TestMain sweeps what a killed run left (nettest.Main); tag "p".
func TestMain(m *testing.M) { nettest.Main(m, "p") }
