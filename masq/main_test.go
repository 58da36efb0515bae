package masq

import (
	"testing"

	"vxrouter/internal/nettest"
)

// TestMain sweeps what a killed run left (nettest.Main); tag "m".
func TestMain(m *testing.M) { nettest.Main(m, "m") }
