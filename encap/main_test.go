package encap_test

import (
	"testing"

	"vxrouter/internal/nettest"
)

// TestMain sweeps what a killed run left (nettest.Main); tag "c".
func TestMain(m *testing.M) { nettest.Main(m, "c") }
