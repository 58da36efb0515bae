package route

import (
	"testing"

	"vxrouter/internal/nettest"
)

// TestMain sweeps what a killed run left (nettest.Main); tag "r".
func TestMain(m *testing.M) { nettest.Main(m, "r") }
