package bench

import (
	"strings"
	"testing"

	"vxrouter/internal/nettest"
	"vxrouter/internal/testbin"
	"vxrouter/lab"
)

// vxrBinary is the vxrouter built for these tests, or "" when not root.
var vxrBinary string

func TestMain(m *testing.M) { nettest.Main(m, "b", testbin.Build(&vxrBinary)) }

func needRoot(t *testing.T) {
	t.Helper()
	if vxrBinary == "" {
		t.Skip("needs root: builds network namespaces, TUN devices and veth pairs")
	}
}

// testPrefix is a lab prefix of this test's own, and a check at cleanup
// that nothing with it is left behind.
func testPrefix(t *testing.T) string {
	prefix := nettest.Name()
	t.Cleanup(func() {
		if nss, err := lab.Namespaces(prefix); err != nil || len(nss) > 0 {
			t.Errorf("namespaces left behind: %v %v", nss, err)
		}
	})
	return prefix
}

// testWriter sends lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
