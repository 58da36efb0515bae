package bench

import (
	"strings"
	"testing"
)

func TestParseRate(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint64
	}{
		{"1G", 1e9},
		{"1g", 1e9},
		{"500M", 500e6},
		{"500m", 500e6},
		{"2.5G", 2.5e9},
		{".5G", 500e6},
		{"1500k", 1.5e6},
		{"1500K", 1.5e6},
		{"800000000", 800e6},
		{" 1 G ", 1e9},
		{"1Gbit/s", 1e9},
		{"1 Gbit/s", 1e9},
		{"250 Mbps", 250e6},
		{"1M", MinCostRate},
		{"100G", MaxCostRate},
		{"0.001G", 1e6},
	} {
		got, err := ParseRate(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, c := range []struct{ in, why string }{
		{"", "want bits per second"},
		{"G", "want bits per second"},
		{"bit/s", "want bits per second"},
		{"abc", "want bits per second"},
		{"1GB", "want bits per second"}, // bytes are not bits
		{"1T", "want bits per second"},
		{"-1G", "want bits per second"},
		{"+1G", "want bits per second"},
		{"1e9", "want bits per second"},
		{"Inf", "want bits per second"},
		{"NaN", "want bits per second"},
		{"0x1p30", "want bits per second"},
		{"1_000M", "want bits per second"},
		{"1.2.3G", "want bits per second"},
		{"1 000M", "want bits per second"},
		{"0", "0 bit/s is out of range, want 1 Mbit/s to 100 Gbit/s"},
		{"999k", "999 kbit/s is out of range"},
		{"101G", "101 Gbit/s is out of range"},
		{"99999999999999999999G", "out of range"},
	} {
		got, err := ParseRate(c.in)
		if err == nil || !strings.Contains(err.Error(), c.why) || !strings.Contains(err.Error(), "rate \""+c.in+"\"") {
			t.Errorf("ParseRate(%q) = %d, %v; want an error naming the input and saying %q", c.in, got, err, c.why)
		}
	}
}

func TestFormatRate(t *testing.T) {
	for _, c := range []struct {
		in   float64
		want string
	}{
		{1e9, "1 Gbit/s"},
		{2.5e9, "2.5 Gbit/s"},
		{500e6, "500 Mbit/s"},
		{1.5e6, "1.5 Mbit/s"},
		{999e3, "999 kbit/s"},
		{0, "0 bit/s"},
	} {
		if got := FormatRate(c.in); got != c.want {
			t.Errorf("FormatRate(%g) = %q, want %q", c.in, got, c.want)
		}
		if c.in >= MinCostRate {
			if back, err := ParseRate(FormatRate(c.in)); err != nil || float64(back) != c.in {
				t.Errorf("ParseRate(FormatRate(%g)) = %d, %v", c.in, back, err)
			}
		}
	}
}
