package bench

import (
	"reflect"
	"testing"
)

func TestCharts(t *testing.T) {
	md := "# Benchmark results\n\n## Bulk TCP\n\nText 5 runs.\n\n" +
		"| Path | Median MB/s | Runs (MB/s) |\n|---|---:|---|\n| loopback | 839.1 | 1139, 789 |\n| `through the agent` | 276.9 | 277, 195 |\n\n" +
		"| Ratio | Value | Target |\n|---|---:|---|\n| engine / loopback | 0.56 | ≥ 0.30 |\n\n" +
		"## Mixed\n\n### Sub part\n\n" +
		"| Measure | Path | Median | Runs |\n|---|---|---:|---|\n| put | none | 1,435.1 MB/s | 1 |\n| put | sandbox | 1608.0 MB/s | 2 |\n" +
		"| conn | none | 184.3 µs | 3 |\n| conn | sandbox | +325.1 µs | 4 |\n| **wall** | clock | 1.95 s | 5 |\n\n" +
		"| Engine | Path | Requests | req/s | p50 ms |\n|---|---|---:|---:|---:|\n| a | direct | 30000 | 13253 | 5.20 |\n| a | … matched | 14937 | | 15.61 |\n| b | direct | 30000 | 16982 | 4.20 |\n"
	got := Charts(md)
	want := []Chart{
		{Name: "bulk-tcp-1", Title: "Bulk TCP — Median MB/s", Unit: "MB/s", Bars: []Bar{{"loopback", 839.1}, {"through the agent", 276.9}}},
		// One row: no chart for the ratio table.
		{Name: "mixed-1", Title: "Mixed: Sub part — Median", Unit: "MB/s", Bars: []Bar{{"put · none", 1435.1}, {"put · sandbox", 1608}}},
		{Name: "mixed-2", Title: "Mixed: Sub part — Median", Unit: "µs", Bars: []Bar{{"conn · none", 184.3}, {"conn · sandbox", 325.1}}},
		// "s" has one row: no chart. req/s is preferred to p50; rows
		// without a value are left out.
		{Name: "mixed-3", Title: "Mixed: Sub part — req/s", Unit: "req/s", Bars: []Bar{{"a · direct", 13253}, {"b · direct", 16982}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Charts:\n got %+v\nwant %+v", got, want)
	}
}

func TestParseValue(t *testing.T) {
	for _, tc := range []struct {
		in   string
		v    float64
		unit string
		ok   bool
	}{
		{"93.0", 93, "", true},
		{"1,083 µs", 1083, "µs", true},
		{"+0.141 ms", 0.141, "ms", true},
		{"-0.029 ms", -0.029, "ms", true},
		{"1.12×", 1.12, "×", true},
		{"**1945**", 1945, "", true},
		{"", 0, "", false},
		{"≤ 1 ms", 0, "", false},
		{"95, 75, 98", 0, "", false},
		{"3 runs of the whole thing (long text)", 0, "", false},
	} {
		v, unit, ok := parseValue(tc.in)
		if v != tc.v || unit != tc.unit || ok != tc.ok {
			t.Errorf("parseValue(%q) = %v, %q, %v; want %v, %q, %v", tc.in, v, unit, ok, tc.v, tc.unit, tc.ok)
		}
	}
}
