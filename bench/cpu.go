package bench

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// userHZ is the unit of the times in /proc/<pid>/stat and /proc/stat. It
// is USER_HZ, which the kernel keeps at 100 for every architecture's /proc
// ABI, whatever its internal tick rate.
const userHZ = 100

// cpuSeconds returns the user plus system CPU time, summed over all
// threads, that the processes pids have used so far.
func cpuSeconds(pids []int) (float64, error) {
	var total float64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return 0, fmt.Errorf("cpu time of pid %d: %w", pid, err)
		}
		s, err := parseStatCPU(string(b))
		if err != nil {
			return 0, fmt.Errorf("cpu time of pid %d: %w", pid, err)
		}
		total += s
	}
	return total, nil
}

// parseStatCPU reads utime and stime (fields 14 and 15) from the text of
// /proc/<pid>/stat, in seconds.
func parseStatCPU(stat string) (float64, error) {
	// Field 2, the command name, is in parentheses and may itself hold
	// spaces and parentheses; the fields after the last ")" are plain.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse stat %q: no command name", stat)
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("parse stat: %d fields after the command name, want at least 13", len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse stat: utime %q stime %q: not numbers", f[11], f[12])
	}
	return float64(ut+st) / userHZ, nil
}

// machineBusySeconds returns the CPU time the whole machine has been busy
// so far, summed over all CPUs: see parseProcStatBusy.
func machineBusySeconds() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("machine cpu time: %w", err)
	}
	s, err := parseProcStatBusy(string(b))
	if err != nil {
		return 0, fmt.Errorf("machine cpu time: %w", err)
	}
	return s, nil
}

// parseProcStatBusy reads the aggregate "cpu" line of /proc/stat (all
// CPUs) and returns user+nice+system+irq+softirq in seconds. Left out:
// idle and iowait (waiting is not work), steal (time another guest of the
// hypervisor had), and guest and guest_nice, which the kernel already
// counts inside user and nice.
func parseProcStatBusy(stat string) (float64, error) {
	for line := range strings.Lines(stat) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "cpu" {
			continue // cpu0, cpu1, intr, ...
		}
		// user nice system idle iowait irq softirq [steal guest guest_nice]
		if len(f) < 8 {
			return 0, fmt.Errorf("parse /proc/stat: %d fields on the cpu line, want at least 7", len(f)-1)
		}
		var busy uint64
		for _, i := range []int{1, 2, 3, 6, 7} {
			n, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse /proc/stat: cpu field %d %q: not a number", i, f[i])
			}
			busy += n
		}
		return float64(busy) / userHZ, nil
	}
	return 0, errors.New("parse /proc/stat: no aggregate cpu line")
}
