package main

import (
	"fmt"
	"math"
	"strings"
)

// ratioChart draws, one panel per suite, each contender's ratio to the
// suite's baseline (median of the same-round ratios, with their min–max as
// a bar) by concurrency, on a linear scale with a line at 1.0: the
// differences the log-scale throughput chart hides.
func ratioChart(rows []row) string {
	panels := suitesOf(rows)
	const pw, ph, ml, mt, mb, legend = 420.0, 300.0, 60.0, 40.0, 50.0, 200.0
	colors := []string{"#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"}
	var b strings.Builder
	cols, rowsN := min(len(panels), panelCols), (len(panels)+panelCols-1)/panelCols
	width := float64(cols) * (pw + ml + legend)
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`+"\n", width, float64(rowsN)*(ph+mt+mb))
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	for i, s := range panels {
		fmt.Fprintf(&b, `<g transform="translate(%.0f,%.0f)">`+"\n", float64(i%panelCols)*(pw+ml+legend), float64(i/panelCols)*(ph+mt+mb))
		ox := ml
		levels := concurrencies(rows, s)
		var names []string
		hi := 1.2
		for _, r := range rows {
			if r.Suite == s && r.Ratio > 0 {
				hi = math.Max(hi, r.RatioMax*1.05)
				if !contains(names, r.Contender) {
					names = append(names, r.Contender)
				}
			}
		}
		step := niceStep(hi)
		hi = math.Ceil(hi/step) * step
		// Concurrencies are evenly spaced; contenders side by side within each.
		slot := pw / float64(len(levels))
		x := func(li, ci int) float64 {
			return ox + slot*float64(li) + slot*(float64(ci)+1)/float64(len(names)+1)
		}
		y := func(v float64) float64 { return mt + ph - ph*v/hi }
		fmt.Fprintf(&b, `<text x="%.0f" y="20" font-size="14" font-weight="bold">%s: ratio to %s (same round, linear)</text>`+"\n", ox, s, baseline[s])
		for v := 0.0; v <= hi+step/2; v += step {
			fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#eee"/><text x="%.0f" y="%.1f" text-anchor="end">%.2g</text>`+"\n",
				ox, y(v), ox+pw, y(v), ox-5, y(v)+4, v)
		}
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="black" stroke-dasharray="6,3"/>`+"\n", ox, y(1), ox+pw, y(1))
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n", ox, mt+ph, ox+pw, mt+ph)
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n", ox, mt, ox, mt+ph)
		for li, p := range levels {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%d</text>`+"\n", ox+slot*(float64(li)+0.5), mt+ph+15, p)
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">%s</text>`+"\n", ox+pw/2, mt+ph+35, unitOf(s))
		for ci, n := range names {
			c := colors[ci%len(colors)]
			for li, p := range levels {
				for _, r := range rows {
					if r.Suite != s || r.Contender != n || r.Publishers != p || r.Ratio <= 0 {
						continue
					}
					cx := x(li, ci)
					fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`+"\n", cx, y(r.RatioMin), cx, y(r.RatioMax), c)
					fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="%s"><title>%s c=%d: %.2f× (%.2f–%.2f)</title></circle>`+"\n",
						cx, y(r.Ratio), c, n, p, r.Ratio, r.RatioMin, r.RatioMax)
				}
			}
			fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="10" height="10" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`+"\n",
				ox+pw+10, mt+float64(ci)*16, c, ox+pw+24, mt+float64(ci)*16+9, n)
		}
		b.WriteString("</g>\n")
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceStep is a grid step of 1, 2 or 5 × 10^k giving 4–10 lines up to hi.
func niceStep(hi float64) float64 {
	raw := hi / 6
	e := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*e {
			return m * e
		}
	}
	return 10 * e
}
