package bench

import (
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"strings"
	"testing"
	"vxrouter/internal/testbin"
)

// vxrBinary is the vxrouter built for these tests, or "" when not root.
var vxrBinary string

func TestMain(m *testing.M) { testbin.Main(m, &vxrBinary) }

func needRoot(t *testing.T) {
	t.Helper()
	if vxrBinary == "" {
		t.Skip("needs root: builds network namespaces, TUN devices and veth pairs")
	}
}

// testPrefix is a lab prefix of this test's own, and a check at cleanup
// that nothing with it is left behind.
func testPrefix(t *testing.T) string {
	b := make([]byte, 2)
	rand.Read(b)
	prefix := "vxbt" + hex.EncodeToString(b)
	t.Cleanup(func() {
		out, _ := exec.Command("ip", "netns", "list").Output()
		for _, f := range strings.Fields(string(out)) {
			if strings.HasPrefix(f, prefix+"-") {
				t.Errorf("namespace %s left behind", f)
			}
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
