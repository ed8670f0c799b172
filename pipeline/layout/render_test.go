package layout

import (
	"image"
	"image/color"
	"image/draw"
	"math"
	"strings"
	"testing"

	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/goregular"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/fixed"

	"github.com/docpipe/docpipe/tracking"
)

// doc is a receipt-like page to draw: free text above and below a table
// whose first column is left-aligned and whose other columns are
// right-aligned at the given edges.
type doc struct {
	size   float64  // font size in pixels
	width  int      // image width
	above  []string // lines above the table (one blank line follows them)
	header []string // table header; nil for none
	rows   [][]string
	below  []string // lines below the table, after a blank line
	// colX is the left edge of column 0 then the right edges of the others.
	colX []int
}

// receipt is the table every layout test draws, in several ways.
func receipt() doc {
	return doc{
		size:   28,
		width:  1000,
		above:  []string{"ACME MARKET", "12 Harbour Road, Springfield", "Receipt 4711   2024-03-05 14:02"},
		header: []string{"Description", "Qty", "Price", "Amount"},
		rows: [][]string{
			{"Coffee beans", "2", "12.50", "25.00"},
			{"Whole milk 1L", "1", "1.99", "1.99"},
			{"Bread", "3", "2.40", "7.20"},
			{"Olive oil", "1", "1,234.50", "1,234.50"},
			{"Eggs (12)", "12", "0.35", "4.20"},
		},
		below: []string{"TOTAL                 1,272.89", "Thank you for shopping with us"},
		colX:  []int{40, 560, 760, 960},
	}
}

// grid is the table as drawn.
func (d doc) grid() [][]string {
	var g [][]string
	if d.header != nil {
		g = append(g, d.header)
	}
	return append(g, d.rows...)
}

func goFace(t testing.TB, size float64) font.Face {
	t.Helper()
	f, err := opentype.Parse(goregular.TTF)
	if err != nil {
		t.Fatalf("parse font: %v", err)
	}
	face, err := opentype.NewFace(f, &opentype.FaceOptions{Size: size, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		t.Fatalf("face: %v", err)
	}
	t.Cleanup(func() { _ = face.Close() })
	return face
}

// render draws d black on white and returns the image with the exact ink
// box of every word drawn, in drawing order (IDs from 1).
func (d doc) render(t testing.TB) (*image.Gray, []tracking.TextBox) {
	t.Helper()
	face := goFace(t, d.size)
	pitch := int(math.Round(d.size * 1.5))
	var lines [][]string // per line: cells; "" for a blank line
	for _, s := range d.above {
		lines = append(lines, []string{s})
	}
	lines = append(lines, nil)
	tableStart := len(lines)
	lines = append(lines, d.grid()...)
	lines = append(lines, nil)
	for _, s := range d.below {
		lines = append(lines, []string{s})
	}
	img := image.NewGray(image.Rect(0, 0, d.width, pitch*(len(lines)+2)))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	dr := &font.Drawer{Dst: img, Src: image.NewUniform(color.Black), Face: face}
	space := dr.MeasureString(" ")

	var boxes []tracking.TextBox
	drawText := func(s string, x fixed.Int26_6, y int) {
		// Runs of spaces inside free text are drawn as such (a gap).
		for i, part := range strings.Split(s, " ") {
			if i > 0 {
				x += space
			}
			if part == "" {
				continue
			}
			dot := fixed.Point26_6{X: x, Y: fixed.I(y)}
			b, adv := font.BoundString(face, part)
			dr.Dot = dot
			dr.DrawString(part)
			boxes = append(boxes, tracking.TextBox{
				ID:         int64(len(boxes) + 1),
				Text:       part,
				Confidence: 0.9,
				BBox: tracking.Rect(
					float64(dot.X+b.Min.X)/64, float64(dot.Y+b.Min.Y)/64,
					float64(dot.X+b.Max.X)/64, float64(dot.Y+b.Max.Y)/64),
				Page:  1,
				Level: tracking.LevelWord,
				Seq:   len(boxes),
			})
			x += adv
		}
	}
	for i, cells := range lines {
		y := pitch * (i + 1)
		if i >= tableStart && i < tableStart+len(d.grid()) {
			for c, s := range cells {
				x := fixed.I(d.colX[c])
				if c > 0 {
					x -= dr.MeasureString(s)
				}
				drawText(s, x, y)
			}
			continue
		}
		for _, s := range cells {
			drawText(s, fixed.I(d.colX[0]), y)
		}
	}
	return img, boxes
}

// skew rotates every box about (cx, cy) by deg degrees (positive: text
// runs downhill to the right), as a scanner would.
func skew(boxes []tracking.TextBox, deg, cx, cy float64) []tracking.TextBox {
	r := deg * math.Pi / 180
	c, s := math.Cos(r), math.Sin(r)
	out := make([]tracking.TextBox, len(boxes))
	for i, b := range boxes {
		for k, p := range b.BBox {
			x, y := p[0]-cx, p[1]-cy
			b.BBox[k] = tracking.Point{cx + x*c - y*s, cy + x*s + y*c}
		}
		out[i] = b
	}
	return out
}
