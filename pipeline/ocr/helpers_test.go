package ocr

import (
	"bytes"
	"context"
	"encoding/binary"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/goregular"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/fixed"

	"github.com/docpipe/docpipe/tracking"
)

// drawn is one word as the test drew it: its text and ink bounds.
type drawn struct {
	text string
	rect image.Rectangle
}

// textLine is a line of text to draw, with its left edge and baseline.
type textLine struct {
	x, y int
	text string
}

// loadFace parses a TrueType/OpenType font at size px per em.
func loadFace(t testing.TB, ttf []byte, size float64) font.Face {
	t.Helper()
	f, err := opentype.Parse(ttf)
	if err != nil {
		t.Fatal(err)
	}
	face, err := opentype.NewFace(f, &opentype.FaceOptions{Size: size, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { face.Close() })
	return face
}

// goFace is Go Regular at 36 px per em: about 300-dpi body text.
func goFace(t testing.TB) font.Face { return loadFace(t, goregular.TTF, 36) }

// render draws lines in black on a white w×h greyscale page and returns
// the page and the ink bounds of every word.
func render(t testing.TB, face font.Face, w, h int, lines []textLine) (*image.Gray, []drawn) {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	d := &font.Drawer{Dst: img, Src: image.Black, Face: face}
	var words []drawn
	for _, l := range lines {
		x := fixed.I(l.x)
		for i, word := range strings.Split(l.text, " ") {
			if i > 0 {
				x += d.MeasureString(" ")
			}
			d.Dot = fixed.Point26_6{X: x, Y: fixed.I(l.y)}
			b, adv := font.BoundString(face, word)
			d.DrawString(word)
			words = append(words, drawn{word, image.Rect(
				(x + b.Min.X).Floor(), (fixed.I(l.y) + b.Min.Y).Floor(),
				(x + b.Max.X).Ceil(), (fixed.I(l.y) + b.Max.Y).Ceil())})
			x += adv
		}
	}
	return img, words
}

// writeFile writes data to a file named name in a per-test directory.
func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// pngBytes encodes img as PNG.
func pngBytes(t testing.TB, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// newClient returns a Client closed at the end of the test.
func newClient(t testing.TB, opts Options) *Client {
	t.Helper()
	c, err := NewClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recognize runs c on path and fails the test on error.
func recognize(t testing.TB, c *Client, path string) *tracking.OCRResult {
	t.Helper()
	res, err := c.Recognize(context.Background(), path)
	if err != nil {
		t.Fatalf("Recognize(%s): %v", path, err)
	}
	if res.Status != tracking.OCRSuccess {
		t.Fatalf("status %q", res.Status)
	}
	return res
}

// words returns the texts of the result's boxes at level.
func texts(res *tracking.OCRResult, level string) []string {
	var out []string
	for _, b := range res.Boxes {
		if b.Level == level {
			out = append(out, b.Text)
		}
	}
	return out
}

// goodImage is a small page that always reads "Hello docpipe 2024".
func goodImage(t testing.TB) string {
	t.Helper()
	img, _ := render(t, goFace(t), 700, 120, []textLine{{40, 75, "Hello docpipe 2024"}})
	return writeFile(t, "good.png", pngBytes(t, img))
}

// assertGood checks that c still recognises the good image: proof that a
// refused input left the engine sound.
func assertGood(t testing.TB, c *Client, good string) {
	t.Helper()
	res := recognize(t, c, good)
	if got := strings.Join(texts(res, tracking.LevelLine), "\n"); got != "Hello docpipe 2024" {
		t.Fatalf("good image read as %q", got)
	}
}

// multiPageTIFF encodes grey pages as an uncompressed little-endian TIFF
// with one IFD per page, at dpi (x/image/tiff writes only one page).
func multiPageTIFF(pages []*image.Gray, dpi uint32) []byte {
	le := binary.LittleEndian
	out := []byte("II*\x00\x00\x00\x00\x00")
	prevNext := 4 // where the previous "next IFD" pointer lives
	for _, p := range pages {
		w, h := p.Rect.Dx(), p.Rect.Dy()
		pixOff := len(out)
		for y := range h {
			out = append(out, p.Pix[y*p.Stride:y*p.Stride+w]...)
		}
		resOff := len(out)
		out = le.AppendUint32(out, dpi)
		out = le.AppendUint32(out, 1)
		if len(out)%2 == 1 {
			out = append(out, 0)
		}
		ifd := len(out)
		le.PutUint32(out[prevNext:], uint32(ifd))
		type entry struct {
			tag, typ uint16
			val      uint32
		}
		entries := []entry{
			{256, 4, uint32(w)}, {257, 4, uint32(h)}, {258, 3, 8}, {259, 3, 1}, {262, 3, 1},
			{273, 4, uint32(pixOff)}, {277, 3, 1}, {278, 4, uint32(h)}, {279, 4, uint32(w * h)},
			{282, 5, uint32(resOff)}, {283, 5, uint32(resOff)}, {296, 3, 2},
		}
		out = le.AppendUint16(out, uint16(len(entries)))
		for _, e := range entries {
			out = le.AppendUint16(out, e.tag)
			out = le.AppendUint16(out, e.typ)
			out = le.AppendUint32(out, 1)
			if e.typ == 3 {
				out = le.AppendUint16(out, uint16(e.val))
				out = le.AppendUint16(out, 0)
			} else {
				out = le.AppendUint32(out, e.val)
			}
		}
		prevNext = len(out)
		out = le.AppendUint32(out, 0)
	}
	return out
}

// withEXIFOrientation inserts an APP1 EXIF segment carrying orientation o
// right after the SOI marker of a JPEG.
func withEXIFOrientation(jpg []byte, o uint16, bo binary.AppendByteOrder) []byte {
	tiffHdr := []byte("II*\x00")
	if bo == binary.AppendByteOrder(binary.BigEndian) {
		tiffHdr = []byte("MM\x00*")
	}
	t := append([]byte{}, tiffHdr...)
	t = bo.AppendUint32(t, 8)
	t = bo.AppendUint16(t, 1) // one entry
	t = bo.AppendUint16(t, 0x0112)
	t = bo.AppendUint16(t, 3)
	t = bo.AppendUint32(t, 1)
	t = bo.AppendUint16(t, o)
	t = bo.AppendUint16(t, 0)
	t = bo.AppendUint32(t, 0) // no next IFD
	seg := append([]byte("Exif\x00\x00"), t...)
	app1 := []byte{0xFF, 0xE1}
	app1 = binary.BigEndian.AppendUint16(app1, uint16(len(seg)+2))
	app1 = append(app1, seg...)
	out := append([]byte{}, jpg[:2]...)
	out = append(out, app1...)
	return append(out, jpg[2:]...)
}

// rotateCCW turns a grey image 90° counter-clockwise, as a phone held
// sideways stores it (EXIF orientation 6 turns it back).
func rotateCCW(src *image.Gray) *image.Gray {
	b := src.Bounds()
	dst := image.NewGray(image.Rect(0, 0, b.Dy(), b.Dx()))
	for y := range b.Dy() {
		for x := range b.Dx() {
			dst.SetGray(y, b.Dx()-1-x, color.Gray{Y: src.GrayAt(x, y).Y})
		}
	}
	return dst
}
