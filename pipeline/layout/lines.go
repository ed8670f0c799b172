package layout

import (
	"cmp"
	"math"
	"slices"
	"strings"
)

// estimateSkew returns the rotation, in degrees within ±maxDeg, that makes
// the page's words line up best horizontally: the angle whose deskewed
// vertical projection profile (each word spreading its width over its
// height) is sharpest. It keeps 0 unless another angle is clearly better.
func estimateSkew(words []*word, maxDeg float64) float64 {
	if maxDeg <= 0 || len(words) < 3 {
		return 0
	}
	var buf []float64
	base := profileScore(words, 0, &buf)
	if base <= 0 {
		return 0
	}
	best, bestScore := 0.0, base
	try := func(deg float64) {
		if s := profileScore(words, deg, &buf); s > bestScore*(1+1e-9) {
			best, bestScore = deg, s
		}
	}
	const coarse, fine = 0.25, 0.05
	for k := 1; float64(k)*coarse <= maxDeg+1e-9; k++ {
		try(float64(k) * coarse)
		try(-float64(k) * coarse)
	}
	c := best
	for k := 1; float64(k)*fine < coarse; k++ {
		for _, d := range []float64{c + float64(k)*fine, c - float64(k)*fine} {
			if math.Abs(d) <= maxDeg+1e-9 {
				try(d)
			}
		}
	}
	if bestScore < base*1.01 {
		return 0
	}
	return best
}

// profileScore is the sum of squares of the vertical projection profile of
// the words rotated by -deg. Each word adds its width, spread evenly over
// the bins its height covers, so the total mass does not depend on deg.
// buf is scratch space kept between calls.
func profileScore(words []*word, deg float64, buf *[]float64) float64 {
	f := newFrame(deg)
	type span struct{ v0, v1, w float64 }
	spans := make([]span, len(words))
	lo, hi := math.Inf(1), math.Inf(-1)
	for i, w := range words {
		v0, v1 := math.Inf(1), math.Inf(-1)
		for _, p := range w.corner {
			_, v := f.in(p)
			v0, v1 = min(v0, v), max(v1, v)
		}
		spans[i] = span{v0, v1, max(w.ow, 1)}
		lo, hi = min(lo, v0), max(hi, v1)
	}
	const maxBins = 1 << 12
	bin := max(1, (hi-lo)/maxBins)
	n := int((hi-lo)/bin) + 2
	if cap(*buf) < n+1 {
		*buf = make([]float64, n+1)
	}
	diff := (*buf)[:n+1]
	clear(diff)
	for _, s := range spans {
		b0 := int((s.v0 - lo) / bin)
		b1 := min(int((s.v1-lo)/bin), n-1)
		d := s.w / float64(b1-b0+1)
		diff[b0] += d
		diff[b1+1] -= d
	}
	score, run := 0.0, 0.0
	for _, d := range diff[:n] {
		run += d
		score += run * run
	}
	return score
}

// line is a line of words in a page's deskewed frame, during analysis.
type line struct {
	index          int
	words          []*word // left to right
	x0, y0, x1, y1 float64
	sumCY, sumH    float64
	height         float64 // median word height, once closed
	segs           []segment
}

// segment is a run of words in a line separated from the next run by a
// gap wider than the cell gap: a table cell candidate.
type segment struct {
	words  []*word
	x0, x1 float64
}

func (l *line) cy() float64    { return l.sumCY / float64(len(l.words)) }
func (l *line) meanH() float64 { return l.sumH / float64(len(l.words)) }

// overlapsX reports whether w covers more than half (of the narrower) of a
// word already in the line: then it is a different line.
func (l *line) overlapsX(w *word) bool {
	for _, o := range l.words {
		ov := min(o.x1, w.x1) - max(o.x0, w.x0)
		if ov > 0 && ov > 0.5*min(o.x1-o.x0, w.x1-w.x0) {
			return true
		}
	}
	return false
}

// buildLines groups words into lines: taken top to bottom, a word joins the
// line whose mean centre is nearest, within half a text height, unless it
// overlaps a word of that line horizontally.
func buildLines(words []*word) []*line {
	order := slices.Clone(words)
	slices.SortStableFunc(order, func(a, b *word) int {
		return cmp.Or(cmp.Compare(a.cy(), b.cy()), cmp.Compare(a.x0, b.x0))
	})
	var lines []*line
	for _, w := range order {
		var best *line
		bestD := math.Inf(1)
		for i := len(lines) - 1; i >= 0; i-- {
			ln := lines[i]
			d := math.Abs(w.cy() - ln.cy())
			if d > 0.5*max(ln.meanH(), w.h()) || d >= bestD || ln.overlapsX(w) {
				continue
			}
			best, bestD = ln, d
		}
		if best == nil {
			best = &line{}
			lines = append(lines, best)
		}
		best.words = append(best.words, w)
		best.sumCY += w.cy()
		best.sumH += w.h()
	}
	for _, ln := range lines {
		slices.SortStableFunc(ln.words, func(a, b *word) int {
			return cmp.Or(cmp.Compare(a.x0, b.x0), cmp.Compare(a.x1, b.x1))
		})
		ln.x0, ln.y0 = math.Inf(1), math.Inf(1)
		ln.x1, ln.y1 = math.Inf(-1), math.Inf(-1)
		hs := make([]float64, len(ln.words))
		for i, w := range ln.words {
			ln.x0, ln.y0 = min(ln.x0, w.x0), min(ln.y0, w.y0)
			ln.x1, ln.y1 = max(ln.x1, w.x1), max(ln.y1, w.y1)
			hs[i] = w.h()
		}
		slices.Sort(hs)
		ln.height = max(hs[len(hs)/2], 1)
	}
	slices.SortStableFunc(lines, func(a, b *line) int {
		return cmp.Or(cmp.Compare(a.cy(), b.cy()), cmp.Compare(a.x0, b.x0))
	})
	return lines
}

// segments splits the line into cell candidates at gaps wider than
// gap × the line's height.
func (l *line) segments(gap float64) {
	l.segs = l.segs[:0]
	cur := segment{words: []*word{l.words[0]}, x0: l.words[0].x0, x1: l.words[0].x1}
	for _, w := range l.words[1:] {
		if w.x0-cur.x1 > gap*l.height {
			l.segs = append(l.segs, cur)
			cur = segment{x0: w.x0, x1: w.x1}
		}
		cur.words = append(cur.words, w)
		cur.x1 = max(cur.x1, w.x1)
	}
	l.segs = append(l.segs, cur)
}

// buildBlocks groups consecutive lines into blocks and appends them to out,
// setting each line's Block.
func buildBlocks(out *Layout, lines []*line, f frame, page int, opts Options) {
	var cur []*line
	var bx0, by0, bx1, by1 float64
	flush := func() {
		if len(cur) == 0 {
			return
		}
		b := Block{Index: len(out.Blocks), Page: page, BBox: f.box(bx0, by0, bx1, by1)}
		texts := make([]string, len(cur))
		for i, ln := range cur {
			b.Lines = append(b.Lines, ln.index)
			texts[i] = out.Lines[ln.index].Text
			out.Lines[ln.index].Block = b.Index
		}
		b.Text = strings.Join(texts, "\n")
		out.Blocks = append(out.Blocks, b)
		cur = nil
	}
	for _, ln := range lines {
		if len(cur) > 0 {
			prev := cur[len(cur)-1]
			h := (prev.height + ln.height) / 2
			gap := ln.y0 - prev.y1
			overlap := min(bx1, ln.x1) - max(bx0, ln.x0)
			aligned := math.Abs(ln.x0-bx0) <= 2*h
			if gap > opts.BlockGap*h || (overlap <= 0 && !aligned) {
				flush()
			}
		}
		if len(cur) == 0 {
			bx0, by0, bx1, by1 = ln.x0, ln.y0, ln.x1, ln.y1
		}
		bx0, by0 = min(bx0, ln.x0), min(by0, ln.y0)
		bx1, by1 = max(bx1, ln.x1), max(by1, ln.y1)
		cur = append(cur, ln)
	}
	flush()
}
