package lab

import (
	"testing"

	"vxrouter/internal/nettest"
)

// TestMain sweeps what a killed run left (nettest.Main); tag "l".
func TestMain(m *testing.M) { nettest.Main(m, "l") }
