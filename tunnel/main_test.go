package tunnel

import (
	"testing"

	"vxrouter/internal/nettest"
)

// TestMain sweeps what a killed run left (nettest.Main); tag "t".
func TestMain(m *testing.M) { nettest.Main(m, "t") }
