package main

import (
	"fmt"
	"math"
	"strings"
)

// chart draws throughput by concurrency, one panel per suite, as SVG (no
// dependency): x = publishers or consumers (log scale), y = median msg/s
// (log scale).
func chart(rows []row) string {
	panels := suitesOf(rows)
	const pw, ph, ml, mt, mb = 420.0, 300.0, 70.0, 40.0, 50.0
	colors := []string{"#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"}
	var b strings.Builder
	cols, rowsN := min(len(panels), panelCols), (len(panels)+panelCols-1)/panelCols
	width := float64(cols) * (pw + ml + 200)
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`+"\n", width, float64(rowsN)*(ph+mt+mb))
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	for i, s := range panels {
		fmt.Fprintf(&b, `<g transform="translate(%.0f,%.0f)">`+"\n", float64(i%panelCols)*(pw+ml+200), float64(i/panelCols)*(ph+mt+mb))
		ox := ml
		pubs, unit := concurrencies(rows, s), unitOf(s)
		var rs []row
		lo, hi := math.Inf(1), 0.0
		for _, r := range rows {
			if r.Suite == s && r.Median > 0 {
				rs = append(rs, r)
				lo, hi = math.Min(lo, r.Median), math.Max(hi, r.Median)
			}
		}
		ylo, yhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
		if yhi == ylo {
			yhi++
		}
		x := func(p int) float64 {
			if len(pubs) == 1 {
				return ox + pw/2
			}
			return ox + pw*math.Log(float64(p)/float64(pubs[0]))/math.Log(float64(pubs[len(pubs)-1])/float64(pubs[0]))
		}
		y := func(v float64) float64 { return mt + ph - ph*(math.Log10(v)-ylo)/(yhi-ylo) }
		fmt.Fprintf(&b, `<text x="%.0f" y="20" font-size="14" font-weight="bold">%s: median msg/s (log) by %s</text>`+"\n", ox, s, unit)
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n", ox, mt+ph, ox+pw, mt+ph)
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n", ox, mt, ox, mt+ph)
		for e := ylo; e <= yhi; e++ {
			v := math.Pow(10, e)
			fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/><text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n",
				ox, y(v), ox+pw, y(v), ox-5, y(v)+4, human(v))
		}
		for _, p := range pubs {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%d</text>`+"\n", x(p), mt+ph+15, p)
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">%s</text>`+"\n", ox+pw/2, mt+ph+35, unit)
		var names []string
		for _, r := range rs {
			if !contains(names, r.Contender) {
				names = append(names, r.Contender)
			}
		}
		for j := len(names) - 1; j >= 0; j-- { // the first contender (ours) drawn last, on top
			n := names[j]
			c := colors[j%len(colors)]
			var pts []string
			for _, r := range rs {
				if r.Contender == n {
					pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(r.Publishers), y(r.Median)))
					fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", x(r.Publishers), y(r.Median), c)
				}
			}
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), c)
			fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="10" height="10" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`+"\n",
				ox+pw+10, mt+float64(j)*16, c, ox+pw+24, mt+float64(j)*16+9, n)
		}
		b.WriteString("</g>\n")
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// panelCols is how many panels a chart puts side by side.
const panelCols = 3

func unitOf(suite string) string {
	if isConsume(suite) {
		return "consumers"
	}
	return "publishers"
}

func human(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.0fM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.0fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}
