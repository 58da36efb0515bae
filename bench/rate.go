package bench

import (
	"fmt"
	"strconv"
	"strings"
)

// The rates the cost test can be paced to, in bit/s. Below a megabit
// the CPU it costs drowns in the 10 ms ticks the clocks count in; above
// 100 Gbit/s no data plane on one machine keeps up.
const (
	MinCostRate = 1e6
	MaxCostRate = 100e9
)

// ParseRate reads a rate in bits per second: a decimal number with an
// optional SI prefix k, M or G (powers of 1000, as iperf3's -b), and
// optionally "bit/s" or "bps" after it: "1G", "500M", "2.5G", "1 Gbit/s",
// "800000". It is for the cost test's pace, so it takes MinCostRate to
// MaxCostRate.
func ParseRate(s string) (uint64, error) {
	bad := func() (uint64, error) {
		return 0, fmt.Errorf("rate %q: want bits per second, a number with an optional k, M or G after it, e.g. 1G, 500M, 2.5G", s)
	}
	t := strings.TrimSpace(s)
	for _, unit := range []string{"bit/s", "bps"} {
		if u, ok := strings.CutSuffix(t, unit); ok {
			t = strings.TrimSpace(u)
			break
		}
	}
	mult := 1.0
	if t != "" {
		switch t[len(t)-1] {
		case 'k', 'K':
			mult = 1e3
		case 'm', 'M':
			mult = 1e6
		case 'g', 'G':
			mult = 1e9
		}
		if mult != 1 {
			t = strings.TrimSpace(t[:len(t)-1])
		}
	}
	// Digits and one point at most: strconv.ParseFloat would also take
	// "Inf", "NaN", "1e9", "0x1p30" and "1_000", which are no way to
	// write a rate on a command line.
	digits, points := 0, 0
	for _, c := range t {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			points++
		default:
			return bad()
		}
	}
	if digits == 0 || points > 1 {
		return bad()
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil {
		return bad()
	}
	bps := v * mult
	if bps < MinCostRate || bps > MaxCostRate {
		return 0, fmt.Errorf("rate %q: %s is out of range, want %s to %s", s, FormatRate(bps), FormatRate(MinCostRate), FormatRate(MaxCostRate))
	}
	return uint64(bps + 0.5), nil
}

// FormatRate writes bits per second as ParseRate reads them, with the
// largest prefix that leaves a number of at least 1: "1 Gbit/s",
// "500 Mbit/s", "2.5 Gbit/s".
func FormatRate(bps float64) string {
	v, unit := bps, "bit/s"
	switch {
	case bps >= 1e9:
		v, unit = bps/1e9, "Gbit/s"
	case bps >= 1e6:
		v, unit = bps/1e6, "Mbit/s"
	case bps >= 1e3:
		v, unit = bps/1e3, "kbit/s"
	}
	return strconv.FormatFloat(v, 'f', -1, 64) + " " + unit
}
