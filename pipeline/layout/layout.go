// Package layout is docpipe's pipeline.layout_stage: it rebuilds the
// physical structure of a page from OCR word boxes — lines, blocks of
// lines, and tables with rows and columns — so that later stages (the
// Excel writer) can lay the document out as cells instead of a bag of
// words.
//
// Analyze is a pure function over []tracking.TextBox; Stage adapts it to
// pipeline.Stage. Everything is computed per page in a deskewed frame
// (the page's skew is estimated from the word boxes), and every box in
// the result is given back in the image's own coordinates.
package layout

import (
	"cmp"
	"math"
	"slices"
	"strings"

	"github.com/docpipe/docpipe/tracking"
)

// Layout is the result of Analyze and of the layout stage (its task
// result, decoded by pipeline/excel). Slices are never nil, so the JSON
// always carries arrays.
type Layout struct {
	Words  int     `json:"words"`  // word boxes analysed (blank words are dropped)
	Pages  []Page  `json:"pages"`  // pages that had words, in order
	Lines  []Line  `json:"lines"`  // in reading order: page, then top to bottom
	Blocks []Block `json:"blocks"` // in reading order
	Tables []Table `json:"tables"` // in reading order
}

// Page describes one page of the analysed words.
type Page struct {
	Page int `json:"page"` // 1-based
	// SkewDegrees is the estimated tilt of the text baselines: positive
	// when text runs downhill to the right (image y grows downwards).
	SkewDegrees float64 `json:"skew_degrees"`
}

// Line is a run of words sharing a baseline, ordered left to right. A line
// spans the whole width of the page: words far apart on the same baseline
// (a receipt's item and its price) are one line, split into cells by
// Table.
type Line struct {
	Index      int           `json:"index"` // position in Layout.Lines
	Page       int           `json:"page"`
	Block      int           `json:"block"` // index in Layout.Blocks
	Text       string        `json:"text"`  // words joined by single spaces
	WordIDs    []int64       `json:"word_ids"`
	BBox       tracking.BBox `json:"bbox"`       // follows the page's skew
	Confidence float64       `json:"confidence"` // mean of its words' confidences
}

// Block is a paragraph-like group of consecutive lines: close vertically and
// overlapping or left-aligned horizontally.
type Block struct {
	Index int           `json:"index"`
	Page  int           `json:"page"`
	Lines []int         `json:"lines"` // indexes in Layout.Lines
	Text  string        `json:"text"`  // its lines joined by "\n"
	BBox  tracking.BBox `json:"bbox"`
}

// Table is a region of consecutive lines whose word groups line up in
// columns. Every row has exactly len(Columns) cells; a cell with no words
// has empty Text.
type Table struct {
	Index   int           `json:"index"`
	Page    int           `json:"page"`
	BBox    tracking.BBox `json:"bbox"`
	Header  bool          `json:"header"` // Rows[0] is a header row
	Columns []Column      `json:"columns"`
	Rows    []Row         `json:"rows"`
}

// Column is one column of a Table.
type Column struct {
	BBox    tracking.BBox `json:"bbox"`    // from the table's top to its bottom
	Align   string        `json:"align"`   // "left", "right" or "center", from the data rows
	Numeric bool          `json:"numeric"` // most data cells hold a number (see ParseNumber)
}

// Row is one line of a Table.
type Row struct {
	Line  int           `json:"line"` // index in Layout.Lines
	BBox  tracking.BBox `json:"bbox"`
	Cells []Cell        `json:"cells"`
}

// Cell is the text of one row in one column.
type Cell struct {
	Text       string   `json:"text"`
	WordIDs    []int64  `json:"word_ids,omitempty"`
	Confidence float64  `json:"confidence,omitempty"` // mean of its words'; 0 when empty
	Number     *float64 `json:"number,omitempty"`     // the value when Text is a number
}

// Grid returns the table's cell texts, row by row.
func (t *Table) Grid() [][]string {
	g := make([][]string, len(t.Rows))
	for i, r := range t.Rows {
		g[i] = make([]string, len(r.Cells))
		for j, c := range r.Cells {
			g[i][j] = c.Text
		}
	}
	return g
}

// Options tunes Analyze. The zero value gives the defaults; distances are
// in multiples of the text height of the lines concerned.
type Options struct {
	// MaxSkewDegrees bounds the skew search; 0 means 3°, a negative value
	// turns deskewing off.
	MaxSkewDegrees float64 `json:"max_skew_degrees,omitempty"`
	// CellGap is the horizontal gap between two words of a line that
	// starts a new cell (default 1.0).
	CellGap float64 `json:"cell_gap,omitempty"`
	// BlockGap is the largest vertical gap between two lines of a block
	// (default 1.0).
	BlockGap float64 `json:"block_gap,omitempty"`
	// RowGap is the largest vertical gap between two rows of a table
	// (default 1.5).
	RowGap float64 `json:"row_gap,omitempty"`
	// MinRows is the least number of rows with two or more cells that make
	// a table (default 2).
	MinRows int `json:"min_rows,omitempty"`
	// MinColumns is the least number of columns of a table (default 2).
	MinColumns int `json:"min_columns,omitempty"`
}

func (o Options) withDefaults() Options {
	if o.MaxSkewDegrees == 0 {
		o.MaxSkewDegrees = 3
	}
	if o.CellGap <= 0 {
		o.CellGap = 1.0
	}
	if o.BlockGap <= 0 {
		o.BlockGap = 1.0
	}
	if o.RowGap <= 0 {
		o.RowGap = 1.5
	}
	if o.MinRows <= 0 {
		o.MinRows = 2
	}
	if o.MinColumns <= 1 {
		o.MinColumns = 2
	}
	return o
}

// Analyze rebuilds lines, blocks and tables from OCR boxes with the default
// Options. See AnalyzeWith.
func Analyze(words []tracking.TextBox) *Layout {
	return AnalyzeWith(words, Options{})
}

// AnalyzeWith rebuilds lines, blocks and tables from OCR boxes.
//
// It uses the boxes of level "word" (or of no level); when there are none it
// falls back to whatever boxes it is given. Words whose text is blank are
// dropped; every other word ends up in exactly one line, and in at most one
// table cell. Page 0 counts as page 1. Non-finite coordinates are treated
// as 0. The input is not modified.
func AnalyzeWith(boxes []tracking.TextBox, opts Options) *Layout {
	opts = opts.withDefaults()
	out := &Layout{Pages: []Page{}, Lines: []Line{}, Blocks: []Block{}, Tables: []Table{}}

	words := selectWords(boxes)
	out.Words = len(words)
	slices.SortStableFunc(words, func(a, b *word) int { return cmp.Compare(a.page, b.page) })
	for start := 0; start < len(words); {
		end := start + 1
		for end < len(words) && words[end].page == words[start].page {
			end++
		}
		analyzePage(out, words[start:end], opts)
		start = end
	}
	return out
}

// word is a TextBox seen in its page's deskewed frame.
type word struct {
	id     int64
	text   string
	conf   float64
	page   int
	corner tracking.BBox // original corners, sanitised
	ow     float64       // original axis-aligned width (weight for skew search)

	x0, y0, x1, y1 float64 // bounds in the deskewed frame
}

func (w *word) cy() float64 { return (w.y0 + w.y1) / 2 }
func (w *word) h() float64  { return w.y1 - w.y0 }

func selectWords(boxes []tracking.TextBox) []*word {
	hasWords := false
	for i := range boxes {
		if boxes[i].Level == tracking.LevelWord || boxes[i].Level == "" {
			hasWords = true
			break
		}
	}
	var out []*word
	for i := range boxes {
		b := &boxes[i]
		if hasWords && b.Level != tracking.LevelWord && b.Level != "" {
			continue
		}
		text := strings.Join(strings.Fields(b.Text), " ")
		if text == "" {
			continue
		}
		w := &word{id: b.ID, text: text, conf: finite(b.Confidence), page: max(b.Page, 1)}
		for k, p := range b.BBox {
			w.corner[k] = tracking.Point{finite(p[0]), finite(p[1])}
		}
		x0, _, x1, _ := w.corner.Bounds()
		w.ow = x1 - x0
		out = append(out, w)
	}
	return out
}

// finite maps NaN to 0 and clamps infinities, so that sorting and
// arithmetic stay well defined on hostile input.
func finite(v float64) float64 {
	switch {
	case math.IsNaN(v):
		return 0
	case v > 1e9:
		return 1e9
	case v < -1e9:
		return -1e9
	}
	return v
}

// frame rotates between image coordinates and a page's deskewed frame.
type frame struct{ cos, sin float64 }

func newFrame(deg float64) frame {
	r := deg * math.Pi / 180
	return frame{cos: math.Cos(r), sin: math.Sin(r)}
}

// in maps an image point into the deskewed frame.
func (f frame) in(p tracking.Point) (u, v float64) {
	return p[0]*f.cos + p[1]*f.sin, -p[0]*f.sin + p[1]*f.cos
}

// out maps a deskewed point back to image coordinates.
func (f frame) out(u, v float64) tracking.Point {
	return tracking.Point{round2(u*f.cos - v*f.sin), round2(u*f.sin + v*f.cos)}
}

// box returns the image-space quadrilateral of a deskewed rectangle.
func (f frame) box(x0, y0, x1, y1 float64) tracking.BBox {
	return tracking.BBox{f.out(x0, y0), f.out(x1, y0), f.out(x1, y1), f.out(x0, y1)}
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }

// place sets the word's deskewed bounds.
func (f frame) place(w *word) {
	w.x0, w.y0 = math.Inf(1), math.Inf(1)
	w.x1, w.y1 = math.Inf(-1), math.Inf(-1)
	for _, p := range w.corner {
		u, v := f.in(p)
		w.x0, w.x1 = min(w.x0, u), max(w.x1, u)
		w.y0, w.y1 = min(w.y0, v), max(w.y1, v)
	}
}

func analyzePage(out *Layout, words []*word, opts Options) {
	page := words[0].page
	deg := estimateSkew(words, opts.MaxSkewDegrees)
	f := newFrame(deg)
	for _, w := range words {
		f.place(w)
	}
	out.Pages = append(out.Pages, Page{Page: page, SkewDegrees: math.Round(deg*100) / 100})

	lines := buildLines(words)
	base := len(out.Lines)
	for i, ln := range lines {
		ln.index = base + i
		ln.segments(opts.CellGap)
		out.Lines = append(out.Lines, Line{
			Index:      ln.index,
			Page:       page,
			Text:       joinText(ln.words),
			WordIDs:    wordIDs(ln.words),
			BBox:       f.box(ln.x0, ln.y0, ln.x1, ln.y1),
			Confidence: meanConf(ln.words),
		})
	}
	buildBlocks(out, lines, f, page, opts)
	buildTables(out, lines, f, page, opts)
}

func joinText(ws []*word) string {
	var b strings.Builder
	for i, w := range ws {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(w.text)
	}
	return b.String()
}

func wordIDs(ws []*word) []int64 {
	ids := make([]int64, len(ws))
	for i, w := range ws {
		ids[i] = w.id
	}
	return ids
}

func meanConf(ws []*word) float64 {
	if len(ws) == 0 {
		return 0
	}
	s := 0.0
	for _, w := range ws {
		s += w.conf
	}
	return math.Round(s/float64(len(ws))*1e4) / 1e4
}
