package layout

import (
	"math"
	"slices"
	"strings"
	"unicode"
)

// span is a horizontal interval in the deskewed frame.
type span struct{ x0, x1 float64 }

func (s span) overlaps(t span) bool { return min(s.x1, t.x1) > max(s.x0, t.x0) }

// addSpans returns the union of cols and the segments' spans, sorted.
func addSpans(cols []span, segs []segment) []span {
	all := slices.Clone(cols)
	for _, s := range segs {
		all = append(all, span{s.x0, s.x1})
	}
	slices.SortFunc(all, func(a, b span) int {
		switch {
		case a.x0 < b.x0:
			return -1
		case a.x0 > b.x0:
			return 1
		}
		return 0
	})
	var out []span
	for _, s := range all {
		if n := len(out); n > 0 && s.x0 < out[n-1].x1 {
			out[n-1].x1 = max(out[n-1].x1, s.x1)
			continue
		}
		out = append(out, s)
	}
	return out
}

// fits reports whether a line's cells keep the columns of a table apart:
// none of its segments bridges two columns and no column holds two of its
// segments.
func fits(cols []span, segs []segment) bool {
	for _, c := range cols {
		n := 0
		for _, s := range segs {
			if c.overlaps(span{s.x0, s.x1}) {
				n++
			}
		}
		if n > 1 {
			return false
		}
	}
	for _, s := range segs {
		n := 0
		for _, c := range cols {
			if c.overlaps(span{s.x0, s.x1}) {
				n++
			}
		}
		if n > 1 {
			return false
		}
	}
	return true
}

// buildTables finds runs of consecutive lines whose cells line up in
// columns and appends them to out as tables.
//
// A run starts at a line with two or more cells and goes on while the next
// line is close below (RowGap) and fits the columns seen so far. Lines with
// a single cell may sit inside a run (a wrapped description) but are
// trimmed from its ends.
func buildTables(out *Layout, lines []*line, f frame, page int, opts Options) {
	var run []*line
	var cols []span
	flush := func() {
		for len(run) > 0 && len(run[len(run)-1].segs) < 2 {
			run = run[:len(run)-1]
		}
		if len(run) > 0 {
			makeTable(out, run, f, page, opts)
		}
		run, cols = nil, nil
	}
	for _, ln := range lines {
		if len(run) > 0 {
			prev := run[len(run)-1]
			h := (prev.height + ln.height) / 2
			if ln.y0-prev.y1 > opts.RowGap*h || !fits(cols, ln.segs) {
				flush()
			}
		}
		if len(run) == 0 && len(ln.segs) < 2 {
			continue
		}
		run = append(run, ln)
		cols = addSpans(cols, ln.segs)
	}
	flush()
}

// makeTable turns a run of lines into a Table when it has enough rows and
// columns.
func makeTable(out *Layout, run []*line, f frame, page int, opts Options) {
	multi := 0
	var cols []span
	for _, ln := range run {
		if len(ln.segs) >= 2 {
			multi++
		}
		cols = addSpans(cols, ln.segs)
	}
	if multi < opts.MinRows {
		return
	}
	// grid[r][c] holds the segment of row r in column c, if any.
	grid := make([][]*segment, len(run))
	for r, ln := range run {
		grid[r] = make([]*segment, len(cols))
		for i := range ln.segs {
			s := &ln.segs[i]
			for c, col := range cols {
				if col.overlaps(span{s.x0, s.x1}) {
					grid[r][c] = s
					break
				}
			}
		}
	}
	h := 0.0
	for _, ln := range run {
		h += ln.height
	}
	h /= float64(len(run))
	cols, grid = mergeLoneColumns(cols, grid, h)
	if len(cols) < opts.MinColumns {
		return
	}

	y0, y1 := math.Inf(1), math.Inf(-1)
	for _, ln := range run {
		y0, y1 = min(y0, ln.y0), max(y1, ln.y1)
	}
	t := Table{
		Index: len(out.Tables),
		Page:  page,
		BBox:  f.box(cols[0].x0, y0, cols[len(cols)-1].x1, y1),
	}
	for r, ln := range run {
		row := Row{Line: ln.index, BBox: f.box(ln.x0, ln.y0, ln.x1, ln.y1), Cells: make([]Cell, len(cols))}
		for c, s := range grid[r] {
			if s == nil {
				continue
			}
			cell := Cell{Text: joinText(s.words), WordIDs: wordIDs(s.words), Confidence: meanConf(s.words)}
			if v, ok := ParseNumber(cell.Text); ok {
				cell.Number = &v
			}
			row.Cells[c] = cell
		}
		t.Rows = append(t.Rows, row)
	}
	t.Header = isHeader(t.Rows)
	data := grid
	if t.Header {
		data = grid[1:]
	}
	for c, col := range cols {
		t.Columns = append(t.Columns, Column{
			BBox:    f.box(col.x0, y0, col.x1, y1),
			Align:   alignment(data, c),
			Numeric: numeric(t.Rows[len(grid)-len(data):], c),
		})
	}
	out.Tables = append(out.Tables, t)
}

// mergeLoneColumns joins two neighbouring columns when one of them is used
// by a single row and no row uses both: a header word that is not aligned
// with the numbers under it (left-aligned "Qty" over right-aligned
// quantities) would otherwise become a column of its own.
func mergeLoneColumns(cols []span, grid [][]*segment, h float64) ([]span, [][]*segment) {
	for c := 0; c+1 < len(cols); {
		both, na, nb := false, 0, 0
		for _, row := range grid {
			a, b := row[c] != nil, row[c+1] != nil
			both = both || (a && b)
			if a {
				na++
			}
			if b {
				nb++
			}
		}
		if both || min(na, nb) != 1 || cols[c+1].x0-cols[c].x1 > 3*h {
			c++
			continue
		}
		cols[c].x1 = cols[c+1].x1
		cols = slices.Delete(cols, c+1, c+2)
		for r, row := range grid {
			if row[c] == nil {
				row[c] = row[c+1]
			}
			grid[r] = slices.Delete(row, c+1, c+2)
		}
	}
	return cols, grid
}

// isHeader reports whether the first row is obviously a header: it has at
// least two cells, none of them numeric or holding digits, and it labels at
// least one column whose cells below are mostly numbers.
func isHeader(rows []Row) bool {
	if len(rows) < 2 {
		return false
	}
	filled := 0
	for _, c := range rows[0].Cells {
		if c.Text == "" {
			continue
		}
		filled++
		if strings.ContainsFunc(c.Text, unicode.IsDigit) {
			return false
		}
	}
	if filled < 2 {
		return false
	}
	for c := range rows[0].Cells {
		if rows[0].Cells[c].Text != "" && numeric(rows[1:], c) {
			return true
		}
	}
	return false
}

// numeric reports whether most (over half) of the non-empty cells of
// column c are numbers.
func numeric(rows []Row, c int) bool {
	n, num := 0, 0
	for _, r := range rows {
		if r.Cells[c].Text == "" {
			continue
		}
		n++
		if r.Cells[c].Number != nil {
			num++
		}
	}
	return n > 0 && 2*num > n
}

// alignment tells how the data cells of column c are aligned: by the edge
// (or centre) that varies least from row to row.
func alignment(grid [][]*segment, c int) string {
	var ls, rs, cs []float64
	for _, row := range grid {
		if s := row[c]; s != nil {
			ls, rs, cs = append(ls, s.x0), append(rs, s.x1), append(cs, (s.x0+s.x1)/2)
		}
	}
	l, r, m := spread(ls), spread(rs), spread(cs)
	switch {
	case r+1 < l && r <= m:
		return "right"
	case m+1 < l && m+1 < r:
		return "center"
	}
	return "left"
}

func spread(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	return slices.Max(v) - slices.Min(v)
}
