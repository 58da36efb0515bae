package kubetest

import (
	"testing"

	"vxrouter/internal/nettest"
)

// TestMain sweeps what a killed run left (nettest.Main); tag "q".
func TestMain(m *testing.M) { nettest.Main(m, "q") }
