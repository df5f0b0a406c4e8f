package bench

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Chart is one bar chart drawn from a table of the results file: a bar per
// row that has a value in the chosen column.
type Chart struct {
	Name  string // file name without extension, from the section's heading
	Title string
	Unit  string // what the values are in: the column's unit, or the cells'
	Bars  []Bar
}

// Bar is one row of a chart.
type Bar struct {
	Label string
	Value float64
}

// Columns charted by preference (the first header containing one of these
// wins), and columns never charted nor used as labels.
var (
	preferred = []string{"median", "req/s", "p50", "value", "rssanon", "rss", "kib", "all processes"}
	skipped   = []string{"runs", "target", "goal", "requests", "lost", "misrouted", "samples", "min", "open files", "p99"}
	number    = regexp.MustCompile(`^([+-]?[0-9][0-9,]*\.?[0-9]*)\s*(.*)$`)
)

// Charts reads the results file's markdown and returns a chart per table
// (per unit, where a column mixes units). Sections ("## ") and their
// subsections ("### ") name and title the charts.
func Charts(md string) []Chart {
	var charts []Chart
	var section, sub string
	count := map[string]int{}
	lines := strings.Split(md, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		switch {
		case strings.HasPrefix(line, "## "):
			section, sub = strings.TrimPrefix(line, "## "), ""
			continue
		case strings.HasPrefix(line, "### "):
			sub = strings.TrimPrefix(line, "### ")
			continue
		case !strings.HasPrefix(line, "|") || i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "|-") && !strings.HasPrefix(lines[i+1], "|:") && !strings.HasPrefix(lines[i+1], "| -"):
			continue
		}
		header := cells(line)
		var rows [][]string
		for i += 2; i < len(lines) && strings.HasPrefix(lines[i], "|"); i++ {
			rows = append(rows, cells(lines[i]))
		}
		i--
		for _, c := range tableCharts(header, rows) {
			title := section
			if sub != "" {
				title += ": " + sub
			}
			c.Title = title + " — " + c.Title
			base := slug(section)
			count[base]++
			c.Name = fmt.Sprintf("%s-%d", base, count[base])
			charts = append(charts, c)
		}
	}
	return charts
}

// tableCharts charts one table: the preferred numeric column, one chart per
// unit found in it; labels join the row's text columns.
func tableCharts(header []string, rows [][]string) []Chart {
	col := -1
	for _, p := range preferred {
		for j, h := range header {
			if strings.Contains(strings.ToLower(h), p) && !isSkipped(h) && numericColumn(rows, j) {
				col = j
				break
			}
		}
		if col >= 0 {
			break
		}
	}
	if col < 0 {
		return nil
	}
	byUnit := map[string]*Chart{}
	var order []string
	for _, r := range rows {
		if col >= len(r) {
			continue
		}
		v, unit, ok := parseValue(r[col])
		if !ok {
			continue
		}
		if unit == "" {
			unit = headerUnit(header[col])
		}
		var label []string
		for j, c := range r {
			if j == col || j >= len(header) || isSkipped(header[j]) {
				continue
			}
			if _, _, num := parseValue(c); !num && c != "" {
				label = append(label, strings.NewReplacer("`", "", "**", "").Replace(c))
			}
		}
		ch := byUnit[unit]
		if ch == nil {
			ch = &Chart{Title: strings.TrimSpace(header[col]), Unit: unit}
			byUnit[unit] = ch
			order = append(order, unit)
		}
		ch.Bars = append(ch.Bars, Bar{Label: strings.Join(label, " · "), Value: v})
	}
	var out []Chart
	for _, u := range order {
		if c := byUnit[u]; len(c.Bars) >= 2 {
			out = append(out, *c)
		}
	}
	return out
}

func isSkipped(h string) bool {
	h = strings.ToLower(strings.TrimSpace(h))
	for _, s := range skipped {
		if strings.HasPrefix(h, s) {
			return true
		}
	}
	return false
}

func numericColumn(rows [][]string, j int) bool {
	for _, r := range rows {
		if j < len(r) {
			if _, _, ok := parseValue(r[j]); ok {
				return true
			}
		}
	}
	return false
}

// parseValue reads "1,083 µs", "+0.141 ms", "1.12×", "93.0": the number
// and what follows it.
func parseValue(s string) (float64, string, bool) {
	s = strings.TrimSpace(strings.Trim(strings.TrimSpace(s), "*"))
	m := number.FindStringSubmatch(s)
	if m == nil {
		return 0, "", false
	}
	v, err := strconv.ParseFloat(strings.ReplaceAll(m[1], ",", ""), 64)
	if err != nil {
		return 0, "", false
	}
	unit := strings.TrimSpace(m[2])
	if len(unit) > 8 || strings.ContainsAny(unit, "(|,0123456789") {
		return 0, "", false // a number starting a sentence, not a value
	}
	return v, unit, true
}

// headerUnit is the unit a header names: "Median MB/s" → "MB/s",
// "p50 ms" → "ms".
func headerUnit(h string) string {
	f := strings.Fields(h)
	if len(f) == 0 {
		return ""
	}
	return strings.Trim(f[len(f)-1], "()")
}

func cells(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(line, "|")
	line = strings.TrimSuffix(line, "|")
	out := strings.Split(line, "|")
	for i := range out {
		out[i] = strings.TrimSpace(out[i])
	}
	return out
}

func slug(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
			dash = false
		case !dash && b.Len() > 0:
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.Trim(b.String(), "-")
}
