package lease

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSubnetEnvRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run", "flannel", "subnet.env") // parent dirs do not exist yet
	e := NewSubnetEnv(netip.MustParsePrefix("172.16.0.0/16"), netip.MustParsePrefix("172.16.57.0/24"), 1450, false)
	if e.Subnet.String() != "172.16.57.1/24" || e.Lease().String() != "172.16.57.0/24" {
		t.Fatalf("NewSubnetEnv: Subnet %s, Lease() %s; want 172.16.57.1/24 and 172.16.57.0/24", e.Subnet, e.Lease())
	}
	if err := WriteSubnetEnv(path, e); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "FLANNEL_NETWORK=172.16.0.0/16\nFLANNEL_SUBNET=172.16.57.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
	if string(b) != want {
		t.Fatalf("file:\n%q\nwant\n%q", b, want)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	got, err := ReadSubnetEnv(path)
	if err != nil || got != e {
		t.Fatalf("ReadSubnetEnv = %+v, %v; want %+v", got, err, e)
	}

	// Overwrite: replaced whole, and no temporary file is left behind.
	e2 := SubnetEnv{Network: e.Network, Subnet: netip.MustParsePrefix("172.16.58.1/24"), MTU: 1400, IPMasq: true}
	if err := WriteSubnetEnv(path, e2); err != nil {
		t.Fatal(err)
	}
	got, err = ReadSubnetEnv(path)
	if err != nil || got != e2 {
		t.Fatalf("ReadSubnetEnv after rewrite = %+v, %v; want %+v", got, err, e2)
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 || ents[0].Name() != "subnet.env" {
		var names []string
		for _, d := range ents {
			names = append(names, d.Name())
		}
		t.Fatalf("directory holds %q, want only subnet.env", names)
	}
}

func TestWriteSubnetEnvFailsCleanly(t *testing.T) {
	dir := t.TempDir()
	// The target is a directory: rename fails, the temp file must go.
	path := filepath.Join(dir, "subnet.env")
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(path, "x"), nil, 0o644) // rename over a non-empty dir fails
	e := NewSubnetEnv(netip.MustParsePrefix("172.16.0.0/16"), netip.MustParsePrefix("172.16.57.0/24"), 1450, false)
	if err := WriteSubnetEnv(path, e); err == nil {
		t.Fatal("WriteSubnetEnv over a directory succeeded")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("%d entries in dir after a failed write, want 1 (no temp file left)", len(ents))
	}
	if err := WriteSubnetEnv(filepath.Join(dir, "y"), SubnetEnv{}); err == nil {
		t.Fatal("WriteSubnetEnv of an empty SubnetEnv succeeded")
	}
}

func TestReadSubnetEnvFlannelFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subnet.env")
	os.WriteFile(path, []byte("# written by flannel\nFLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n"+
		"FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42:3::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n\n"), 0o644)
	e, err := ReadSubnetEnv(path)
	if err != nil {
		t.Fatal(err)
	}
	if e.Network.String() != "10.244.0.0/16" || e.Lease().String() != "10.244.3.0/24" || e.MTU != 1450 || !e.IPMasq {
		t.Fatalf("ReadSubnetEnv = %+v", e)
	}

	for _, bad := range []string{
		"FLANNEL_NETWORK=10.244.0.0/16\n",
		"FLANNEL_NETWORK=x\nFLANNEL_SUBNET=10.244.3.1/24\n",
		"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=big\n",
		"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPMASQ=maybe\n",
		"FLANNEL_NETWORK=10.244.0.0/16\nnonsense\n",
	} {
		os.WriteFile(path, []byte(bad), 0o644)
		if e, err := ReadSubnetEnv(path); err == nil {
			t.Errorf("ReadSubnetEnv(%q) = %+v, want an error", bad, e)
		} else if !strings.Contains(err.Error(), path) {
			t.Errorf("error %q does not name the file", err)
		}
	}
	if _, err := ReadSubnetEnv(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadSubnetEnv(missing) = %v, want a not-exist error", err)
	}
}
