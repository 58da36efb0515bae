package node

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
)

const vtepFile = "vtep-mac"

// loadOrCreateVTEP returns the VTEP MAC kept in dir, making and keeping a
// new one the first time.
func loadOrCreateVTEP(dir string) (net.HardwareAddr, error) {
	path := filepath.Join(dir, vtepFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		mac, err := net.ParseMAC(string(bytes.TrimSpace(b)))
		if err != nil || len(mac) != 6 {
			return nil, fmt.Errorf("vtep mac in %s is not a MAC address (remove the file to make a new one): %q", path, bytes.TrimSpace(b))
		}
		return mac, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read vtep mac: %w", err)
	}
	mac, err := newVTEP()
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(path, []byte(mac.String()+"\n")); err != nil {
		return nil, fmt.Errorf("keep vtep mac: %w", err)
	}
	return mac, nil
}

// newVTEP makes a random MAC that is locally administered (bit 1 of the
// first byte set) and unicast (bit 0 clear), as the kernel does for vxlan
// devices.
func newVTEP() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, fmt.Errorf("make vtep mac: %w", err)
	}
	mac[0] = mac[0]&^0x01 | 0x02
	return mac, nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory and a rename, so a reader sees the old file or the new one.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // fails harmlessly after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
