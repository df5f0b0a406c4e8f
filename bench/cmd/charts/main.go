// Command charts draws a bar chart (PNG) for every table of the benchmark
// results file, and an index of them in markdown: `make bench` runs it
// after the benchmarks.
//
//	go run ./bench/cmd/charts [-in bench/results.md] [-out bench/charts]
package main

import (
	"flag"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/mirrord-go/mirrord/bench"
)

func main() {
	in := flag.String("in", "bench/results.md", "the results file")
	out := flag.String("out", "bench/charts", "where to write the charts and their index")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		fmt.Fprintf(os.Stderr, "charts: %v\n", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	md, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	charts := bench.Charts(string(md))
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	// Charts of an earlier run that this one has not drawn would lie.
	old, _ := filepath.Glob(filepath.Join(out, "*.png"))
	for _, f := range old {
		os.Remove(f)
	}
	var index strings.Builder
	index.WriteString("# Benchmark charts\n\nDrawn by `make bench` (`go run ./bench/cmd/charts`) from the tables of [results.md](../results.md), a chart per table; the tables have the runs, conditions and targets.\n")
	section := ""
	for _, c := range charts {
		if s, _, _ := strings.Cut(c.Title, " — "); s != section {
			section = s
			fmt.Fprintf(&index, "\n## %s\n", section)
		}
		file := c.Name + ".png"
		if err := draw(c, filepath.Join(out, file)); err != nil {
			return fmt.Errorf("%s: %w", c.Name, err)
		}
		fmt.Fprintf(&index, "\n![%s](%s)\n", c.Title, file)
	}
	return os.WriteFile(filepath.Join(out, "README.md"), []byte(index.String()), 0o644)
}

// draw renders c as horizontal bars, the first row on top.
func draw(c bench.Chart, path string) error {
	p := plot.New()
	p.Title.Text = shorten(c.Title, 110)
	p.X.Label.Text = c.Unit
	p.X.Min = 0
	n := len(c.Bars)
	values := make(plotter.Values, n)
	labels := make([]string, n)
	tips := plotter.XYLabels{XYs: make(plotter.XYs, n), Labels: make([]string, n)}
	top := 0.0
	for i, b := range c.Bars {
		// Bottom to top: the table's first row is drawn last, on top.
		values[n-1-i] = b.Value
		labels[n-1-i] = shorten(b.Label, 70)
		tips.XYs[n-1-i] = plotter.XY{X: max(b.Value, 0), Y: float64(n - 1 - i)}
		tips.Labels[n-1-i] = " " + strconv.FormatFloat(b.Value, 'g', 4, 64)
		top = max(top, b.Value)
	}
	p.X.Max = top * 1.15
	bars, err := plotter.NewBarChart(values, vg.Points(14))
	if err != nil {
		return err
	}
	bars.Horizontal = true
	bars.Color = color.RGBA{R: 0x3b, G: 0x6e, B: 0xa8, A: 0xff}
	bars.LineStyle.Width = 0
	p.Add(bars)
	values2, err := plotter.NewLabels(tips)
	if err != nil {
		return err
	}
	p.Add(values2)
	p.NominalY(labels...)
	p.Add(plotter.NewGrid())
	height := vg.Length(n)*vg.Points(22) + vg.Points(90)
	return p.Save(10*vg.Inch, height, path)
}

func shorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
