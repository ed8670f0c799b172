package layout

import (
	"bufio"
	"bytes"
	"image"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	xdraw "golang.org/x/image/draw"
	"golang.org/x/image/math/f64"

	"github.com/docpipe/docpipe/tracking"
)

// TestAnalyzeTesseract OCRs rendered receipts with the real tesseract CLI
// (TSV output) and checks that the table comes back from its word boxes.
func TestAnalyzeTesseract(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("tesseract"); err != nil {
		t.Skip("tesseract is not installed (apt-get install tesseract-ocr): skipping the real-OCR test")
	}
	tests := []struct {
		name    string
		skewDeg float64
	}{
		{"straight", 0},
		{"scanned at 1.5°", 1.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := receipt()
			d.size = 32
			d.width = 1100
			d.colX = []int{40, 640, 860, 1060}
			img, _ := d.render(t)
			var src image.Image = img
			if tt.skewDeg != 0 {
				src = rotate(img, tt.skewDeg)
			}
			boxes := tesseract(t, src)
			got := Analyze(boxes)
			if len(got.Pages) != 1 || math.Abs(got.Pages[0].SkewDegrees-tt.skewDeg) > 0.3 {
				t.Errorf("pages = %+v, want skew %.1f", got.Pages, tt.skewDeg)
			}
			if len(got.Tables) != 1 {
				t.Fatalf("got %d tables, want 1; lines: %q", len(got.Tables), texts(got.Lines))
			}
			if g, w := got.Tables[0].Grid(), d.grid(); !reflect.DeepEqual(g, w) {
				t.Errorf("grid:\n got %q\nwant %q", g, w)
			}
			if !got.Tables[0].Header {
				t.Errorf("header not detected")
			}
			checkPartition(t, boxes, got)
		})
	}
}

// rotate turns img by deg degrees about its centre (positive: text runs
// downhill to the right), on white.
func rotate(img *image.Gray, deg float64) *image.Gray {
	b := img.Bounds()
	out := image.NewGray(b)
	for i := range out.Pix {
		out.Pix[i] = 0xff
	}
	r := deg * math.Pi / 180
	c, s := math.Cos(r), math.Sin(r)
	cx, cy := float64(b.Dx())/2, float64(b.Dy())/2
	// dst = R·(src - centre) + centre
	m := f64.Aff3{c, -s, cx - c*cx + s*cy, s, c, cy - s*cx - c*cy}
	xdraw.BiLinear.Transform(out, m, img, b, xdraw.Over, nil)
	return out
}

// tesseract runs the tesseract CLI on img and returns its word boxes.
func tesseract(t *testing.T, img image.Image) []tracking.TextBox {
	t.Helper()
	path := filepath.Join(t.TempDir(), "page.png")
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatalf("encode png: %v", err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatalf("write png: %v", err)
	}
	cmd := exec.CommandContext(t.Context(), "tesseract", path, "stdout", "--psm", "6", "tsv")
	cmd.Env = append(os.Environ(), "OMP_THREAD_LIMIT=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tesseract: %v", err)
	}
	var boxes []tracking.TextBox
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// level page block par line word left top width height conf text
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 12 || f[0] != "5" || strings.TrimSpace(f[11]) == "" {
			continue
		}
		n := make([]float64, 5)
		for i := range n {
			if n[i], err = strconv.ParseFloat(f[6+i], 64); err != nil {
				t.Fatalf("tesseract tsv %q: %v", sc.Text(), err)
			}
		}
		page, _ := strconv.Atoi(f[1])
		boxes = append(boxes, tracking.TextBox{
			ID:         int64(len(boxes) + 1),
			Text:       f[11],
			Confidence: n[4] / 100,
			BBox:       tracking.Rect(n[0], n[1], n[0]+n[2], n[1]+n[3]),
			Page:       page,
			Level:      tracking.LevelWord,
			Seq:        len(boxes),
		})
	}
	if len(boxes) == 0 {
		t.Fatalf("tesseract found no words:\n%s", out)
	}
	return boxes
}
