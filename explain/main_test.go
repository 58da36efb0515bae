package explain

import (
	"testing"

	"vxrouter/internal/nettest"
)

// TestMain sweeps what a killed run left (nettest.Main); tag "x".
func TestMain(m *testing.M) { nettest.Main(m, "x") }
