package layout

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/docpipe/docpipe/tracking"
)

func TestAnalyzeRenderedReceipt(t *testing.T) {
	t.Parallel()
	wide := receipt()
	wide.colX = []int{40, 620, 800, 980}
	small := receipt()
	small.size = 18
	small.colX = []int{30, 360, 480, 600}
	small.width = 640
	noHeader := receipt()
	noHeader.header = nil

	tests := []struct {
		name    string
		doc     doc
		skewDeg float64
	}{
		{"straight", receipt(), 0},
		{"skew +1.5°", receipt(), 1.5},
		{"skew -1.5°", receipt(), -1.5},
		{"skew +2°", receipt(), 2},
		{"skew -2° wide columns", wide, -2},
		{"small font", small, 0},
		{"small font skew +1.5°", small, 1.5},
		{"no header", noHeader, 0},
		{"no header skew -1.5°", noHeader, -1.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			img, boxes := tt.doc.render(t)
			b := img.Bounds()
			boxes = skew(boxes, tt.skewDeg, float64(b.Dx())/2, float64(b.Dy())/2)
			got := Analyze(boxes)

			if len(got.Pages) != 1 || math.Abs(got.Pages[0].SkewDegrees-tt.skewDeg) > 0.15 {
				t.Errorf("pages = %+v, want one page with skew %.2f", got.Pages, tt.skewDeg)
			}
			wantLines := lineTexts(tt.doc)
			if gotLines := texts(got.Lines); !reflect.DeepEqual(gotLines, wantLines) {
				t.Errorf("lines:\n got %q\nwant %q", gotLines, wantLines)
			}
			if len(got.Blocks) != 3 {
				t.Errorf("got %d blocks, want 3 (above, table, below): %+v", len(got.Blocks), blockTexts(got.Blocks))
			}
			if len(got.Tables) != 1 {
				t.Fatalf("got %d tables, want 1: %+v", len(got.Tables), got.Tables)
			}
			tab := got.Tables[0]
			if g, w := tab.Grid(), tt.doc.grid(); !reflect.DeepEqual(g, w) {
				t.Errorf("grid:\n got %q\nwant %q", g, w)
			}
			if tab.Header != (tt.doc.header != nil) {
				t.Errorf("header = %v, want %v", tab.Header, tt.doc.header != nil)
			}
			wantAlign := []string{"left", "right", "right", "right"}
			wantNum := []bool{false, true, true, true}
			for c, col := range tab.Columns {
				if col.Align != wantAlign[c] || col.Numeric != wantNum[c] {
					t.Errorf("column %d: align %s numeric %v, want %s %v", c, col.Align, col.Numeric, wantAlign[c], wantNum[c])
				}
			}
			// The column boxes follow the page's skew: their left edge tilts.
			x0 := tab.Columns[0].BBox
			if tilt := x0[3][0] - x0[0][0]; math.Abs(tilt) > 1 && tt.skewDeg == 0 || tt.skewDeg != 0 && tilt*tt.skewDeg >= 0 {
				t.Errorf("column 0 bbox %v does not follow skew %.1f°", x0, tt.skewDeg)
			}
			last := tab.Rows[len(tab.Rows)-1].Cells[3]
			if last.Number == nil || *last.Number != 4.2 {
				t.Errorf("last amount cell = %+v, want number 4.2", last)
			}
			checkPartition(t, boxes, got)
		})
	}
}

// lineTexts is every drawn line with its words joined by single spaces.
func lineTexts(d doc) []string {
	var out []string
	for _, s := range d.above {
		out = append(out, strings.Join(strings.Fields(s), " "))
	}
	for _, r := range d.grid() {
		out = append(out, strings.Join(strings.Fields(strings.Join(r, " ")), " "))
	}
	for _, s := range d.below {
		out = append(out, strings.Join(strings.Fields(s), " "))
	}
	return out
}

func texts(lines []Line) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.Text
	}
	return out
}

func blockTexts(blocks []Block) []string {
	out := make([]string, len(blocks))
	for i, b := range blocks {
		out[i] = b.Text
	}
	return out
}

// checkPartition asserts the invariants of any Layout: every non-blank word
// is in exactly one line, in at most one table cell, and the indexes agree.
func checkPartition(t *testing.T, boxes []tracking.TextBox, l *Layout) {
	t.Helper()
	hasWords := false
	for _, b := range boxes {
		hasWords = hasWords || b.Level == tracking.LevelWord || b.Level == ""
	}
	want := map[int64]bool{}
	for _, b := range boxes {
		if hasWords && b.Level == tracking.LevelLine {
			continue
		}
		if strings.TrimSpace(b.Text) != "" {
			want[b.ID] = true
		}
	}
	seen := map[int64]int{}
	for i, ln := range l.Lines {
		if ln.Index != i {
			t.Errorf("line %d has index %d", i, ln.Index)
		}
		if ln.Block < 0 || ln.Block >= len(l.Blocks) {
			t.Errorf("line %d in block %d of %d", i, ln.Block, len(l.Blocks))
		}
		for _, id := range ln.WordIDs {
			seen[id]++
		}
	}
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("word %d is in %d lines", id, seen[id])
		}
	}
	if len(seen) != len(want) {
		t.Errorf("lines hold %d distinct words, want %d", len(seen), len(want))
	}
	inLines := 0
	for _, b := range l.Blocks {
		inLines += len(b.Lines)
	}
	if inLines != len(l.Lines) {
		t.Errorf("blocks hold %d lines, want %d", inLines, len(l.Lines))
	}
	cells := map[int64]int{}
	for _, tab := range l.Tables {
		for _, r := range tab.Rows {
			if len(r.Cells) != len(tab.Columns) {
				t.Errorf("table %d row has %d cells, want %d", tab.Index, len(r.Cells), len(tab.Columns))
			}
			for _, c := range r.Cells {
				for _, id := range c.WordIDs {
					cells[id]++
					if cells[id] > 1 || !want[id] {
						t.Errorf("word %d in %d cells (known: %v)", id, cells[id], want[id])
					}
				}
			}
		}
	}
	if _, err := json.Marshal(l); err != nil {
		t.Errorf("marshal layout: %v", err)
	}
}

// box is a word at (x, y) of the given width, 20 px high.
func box(id int64, text string, x, y, w float64) tracking.TextBox {
	return tracking.TextBox{ID: id, Text: text, Confidence: 0.8, BBox: tracking.Rect(x, y, x+w, y+20), Page: 1, Level: tracking.LevelWord}
}

func TestAnalyzeSmallCases(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		boxes      []tracking.TextBox
		wantLines  []string
		wantBlocks int
		wantGrids  [][][]string
	}{
		{name: "empty", wantLines: []string{}},
		{
			name:       "words out of order make one line",
			boxes:      []tracking.TextBox{box(3, "world", 120, 12, 60), box(1, "hello", 40, 10, 60), box(2, "big", 105, 5, 10)},
			wantLines:  []string{"hello big world"},
			wantBlocks: 1,
		},
		{
			name: "line boxes are ignored when words exist",
			boxes: []tracking.TextBox{
				{ID: 9, Text: "hello world", BBox: tracking.Rect(40, 10, 180, 30), Level: tracking.LevelLine},
				box(1, "hello", 40, 10, 60), box(2, "world", 110, 10, 70),
			},
			wantLines:  []string{"hello world"},
			wantBlocks: 1,
		},
		{
			name: "only line boxes are used as they are",
			boxes: []tracking.TextBox{
				{ID: 9, Text: "hello world", BBox: tracking.Rect(40, 10, 180, 30), Level: tracking.LevelLine},
			},
			wantLines:  []string{"hello world"},
			wantBlocks: 1,
		},
		{
			name:       "blank words are dropped",
			boxes:      []tracking.TextBox{box(1, "  ", 40, 10, 60), box(2, "a", 110, 10, 10)},
			wantLines:  []string{"a"},
			wantBlocks: 1,
		},
		{
			name: "two paragraphs",
			boxes: []tracking.TextBox{
				box(1, "one", 40, 10, 40), box(2, "two", 40, 40, 40),
				box(3, "three", 40, 120, 40),
			},
			wantLines:  []string{"one", "two", "three"},
			wantBlocks: 2,
		},
		{
			name: "key value table without header",
			boxes: []tracking.TextBox{
				box(1, "Date", 40, 10, 40), box(2, "2024-01-02", 300, 10, 100),
				box(3, "Total", 40, 40, 50), box(4, "12.00", 340, 40, 60),
			},
			wantLines:  []string{"Date 2024-01-02", "Total 12.00"},
			wantBlocks: 1,
			wantGrids:  [][][]string{{{"Date", "2024-01-02"}, {"Total", "12.00"}}},
		},
		{
			name: "wrapped description stays in the table",
			boxes: []tracking.TextBox{
				box(1, "Tea", 40, 10, 40), box(2, "3.00", 340, 10, 60),
				box(3, "green", 40, 40, 60),
				box(4, "Jam", 40, 70, 40), box(5, "2.00", 340, 70, 60),
			},
			wantLines:  []string{"Tea 3.00", "green", "Jam 2.00"},
			wantBlocks: 1,
			wantGrids:  [][][]string{{{"Tea", "3.00"}, {"green", ""}, {"Jam", "2.00"}}},
		},
		{
			name: "left-aligned header over right-aligned numbers",
			boxes: []tracking.TextBox{
				box(1, "Item", 40, 10, 40), box(2, "Qty", 300, 10, 40),
				box(3, "Tea", 40, 40, 40), box(4, "3", 390, 40, 10),
				box(5, "Jam", 40, 70, 40), box(6, "12", 380, 70, 20),
			},
			wantLines:  []string{"Item Qty", "Tea 3", "Jam 12"},
			wantBlocks: 1,
			wantGrids:  [][][]string{{{"Item", "Qty"}, {"Tea", "3"}, {"Jam", "12"}}},
		},
		{
			name: "pages are analysed apart",
			boxes: []tracking.TextBox{
				{ID: 1, Text: "p2", BBox: tracking.Rect(40, 10, 80, 30), Page: 2, Level: tracking.LevelWord},
				box(2, "p1", 40, 10, 40),
			},
			wantLines:  []string{"p1", "p2"},
			wantBlocks: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := Analyze(tt.boxes)
			if g := texts(got.Lines); !reflect.DeepEqual(g, tt.wantLines) {
				t.Errorf("lines = %q, want %q", g, tt.wantLines)
			}
			if len(got.Blocks) != tt.wantBlocks {
				t.Errorf("blocks = %q, want %d", blockTexts(got.Blocks), tt.wantBlocks)
			}
			var grids [][][]string
			for _, tab := range got.Tables {
				grids = append(grids, tab.Grid())
			}
			if !reflect.DeepEqual(grids, tt.wantGrids) {
				t.Errorf("tables = %q, want %q", grids, tt.wantGrids)
			}
			checkPartition(t, tt.boxes, got)
		})
	}
}

func TestParseNumber(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want float64
		ok   bool
	}{
		{"2", 2, true},
		{"12.50", 12.5, true},
		{"1,234.50", 1234.5, true},
		{"1.234,50", 1234.5, true},
		{"1,234,567", 1234567, true},
		{"1.234.567", 1234567, true},
		{"1,234", 1234, true},
		{"1,5", 1.5, true},
		{"0,50", 0.5, true},
		{"0.35", 0.35, true},
		{".5", 0.5, true},
		{"-3", -3, true},
		{"+3", 3, true},
		{"4.00-", -4, true},
		{"(4.00)", -4, true},
		{"$12.00", 12, true},
		{"-$5", -5, true},
		{"$-5", -5, true},
		{"12,00 €", 12, true},
		{"£ 3", 3, true},
		{"0", 0, true},
		{"", 0, false},
		{"abc", 0, false},
		{"12a", 0, false},
		{"2024-03-05", 0, false},
		{"14:02", 0, false},
		{"10%", 0, false},
		{"007", 0, false},
		{"1,23,4", 0, false},
		{"1.2.3", 0, false},
		{"1,234.5.6", 0, false},
		{"12,34.5", 0, false},
		{".", 0, false},
		{"$", 0, false},
		{"--5", 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseNumber(tt.in)
		if ok != tt.ok || got != tt.want {
			t.Errorf("ParseNumber(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func FuzzAnalyze(f *testing.F) {
	f.Add([]byte{10, 10, 40, 20, 0, 60, 10, 40, 20, 0, 10, 40, 40, 20, 0})
	f.Add([]byte{0, 0, 0, 0, 0, 255, 255, 255, 255, 255})
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		var boxes []tracking.TextBox
		for i := 0; i+5 <= len(data) && len(boxes) < 300; i += 5 {
			d := data[i : i+5]
			x, y := float64(d[0])*4, float64(d[1])*4
			w, h := float64(d[2]), float64(d[3]%64)
			text := fmt.Sprintf("w%d", len(boxes))
			switch d[4] % 16 {
			case 0:
				text = " "
			case 1:
				text = "1,234.50"
			case 2:
				x = math.NaN()
			case 3:
				w = math.Inf(1)
			}
			b := tracking.TextBox{
				ID: int64(len(boxes) + 1), Text: text, Confidence: float64(d[4]) / 255,
				BBox: tracking.Rect(x, y, x+w, y+h), Page: int(d[4] % 3), Level: tracking.LevelWord,
			}
			if d[4]%7 == 0 { // a rotated quad
				b.BBox[1][1] += w / 20
				b.BBox[2][1] += w / 20
			}
			boxes = append(boxes, b)
		}
		checkPartition(t, boxes, Analyze(boxes))
	})
}

// BenchmarkAnalyze analyses the skewed receipt (about 60 words).
func BenchmarkAnalyze(b *testing.B) {
	img, boxes := receipt().render(b)
	bb := img.Bounds()
	boxes = skew(boxes, 1.5, float64(bb.Dx())/2, float64(bb.Dy())/2)
	b.ReportAllocs()
	for b.Loop() {
		Analyze(boxes)
	}
}
