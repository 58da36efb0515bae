package deploy

import (
	"testing"

	"vxrouter/internal/nettest"
)

// TestMain sweeps what a killed run left (nettest.Main); tag "d".
func TestMain(m *testing.M) { nettest.Main(m, "d") }
