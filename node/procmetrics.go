package node

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
)

// writeProcessMetrics writes, in Prometheus' text format and under the
// names Prometheus' Go client gives them, what shows a process that leaks:
// goroutines, the Go heap (allocated, and live as of the last collection),
// resident memory and open file descriptors. Reading them stops nothing
// (runtime/metrics and /proc, not runtime.ReadMemStats).
func writeProcessMetrics(w io.Writer) {
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/live:bytes"},
	}
	metrics.Read(samples)
	gauge := func(name, help string, v uint64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %d\n", name, help, name, name, v)
	}
	gauge("go_goroutines", "Goroutines that currently exist.", uint64(runtime.NumGoroutine()))
	for i, m := range []struct{ name, help string }{
		{"go_memstats_heap_alloc_bytes", "Bytes of allocated heap objects, reachable or not yet collected."},
		{"go_gc_heap_live_bytes", "Bytes of heap objects marked live by the last garbage collection."},
	} {
		if samples[i].Value.Kind() == metrics.KindUint64 {
			gauge(m.name, m.help, samples[i].Value.Uint64())
		}
	}
	if rss, err := residentBytes(); err == nil {
		gauge("process_resident_memory_bytes", "Resident memory size in bytes.", rss)
	}
	if fds, err := openFDs(); err == nil {
		gauge("process_open_fds", "Open file descriptors.", uint64(fds))
	}
}

// residentBytes is this process's resident set size, from /proc/self/statm
// (its second field, in pages).
func residentBytes() (uint64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, err
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0, fmt.Errorf("/proc/self/statm: %q", b)
	}
	pages, err := strconv.ParseUint(string(f[1]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/self/statm: %w", err)
	}
	return pages * uint64(os.Getpagesize()), nil
}

// openFDs counts this process's open file descriptors (the directory's
// own, open while it is read, included).
func openFDs() (int, error) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	return len(names), err
}
