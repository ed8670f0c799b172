package ocr

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"image"
	"image/jpeg"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"

	"github.com/docpipe/docpipe/tracking"
)

// slack is how far (px) a recognised box may sit inside the drawn ink.
const slack = 4

// contains reports whether box b, grown by slack, contains r.
func contains(b tracking.BBox, r image.Rectangle) bool {
	x0, y0, x1, y1 := b.Bounds()
	return x0-slack <= float64(r.Min.X) && y0-slack <= float64(r.Min.Y) &&
		x1+slack >= float64(r.Max.X) && y1+slack >= float64(r.Max.Y)
}

// checkWords asserts that every drawn word was recognised, exactly, with
// a box around where it was drawn.
func checkWords(t *testing.T, res *tracking.OCRResult, want []drawn, page int) {
	t.Helper()
	for _, w := range want {
		found := false
		for _, b := range res.Boxes {
			if b.Level == tracking.LevelWord && b.Page == page && b.Text == w.text && contains(b.BBox, w.rect) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("page %d: word %q drawn at %v not recognised; got words %q", page, w.text, w.rect, texts(res, tracking.LevelWord))
		}
	}
}

// checkShape asserts the invariants every result has: Seq runs from 0,
// confidences are 0–1, every word lies inside a line, pages are 1-based.
func checkShape(t *testing.T, res *tracking.OCRResult) {
	t.Helper()
	var line tracking.BBox
	for i, b := range res.Boxes {
		if b.Seq != i {
			t.Errorf("box %d has seq %d", i, b.Seq)
		}
		if b.Confidence < 0 || b.Confidence > 1 {
			t.Errorf("box %q confidence %v", b.Text, b.Confidence)
		}
		if b.Page < 1 || b.Page > res.Pages {
			t.Errorf("box %q page %d of %d", b.Text, b.Page, res.Pages)
		}
		if b.Text == "" {
			t.Errorf("box %d is empty", i)
		}
		switch b.Level {
		case tracking.LevelLine:
			line = b.BBox
		case tracking.LevelWord:
			x0, y0, x1, y1 := b.BBox.Bounds()
			if !contains(line, image.Rect(int(x0), int(y0), int(x1), int(y1))) {
				t.Errorf("word %q %v outside its line %v", b.Text, b.BBox, line)
			}
		default:
			t.Errorf("box %q level %q", b.Text, b.Level)
		}
	}
}

func TestRecognizeLayouts(t *testing.T) {
	face := goFace(t)
	c := newClient(t, Options{})
	tests := []struct {
		name      string
		w, h      int
		lines     []textLine
		wantLines []string // when the line grouping is certain
	}{
		{
			name: "single line",
			w:    900, h: 150,
			lines:     []textLine{{50, 90, "Invoice number 12345"}},
			wantLines: []string{"Invoice number 12345"},
		},
		{
			name: "multi-line",
			w:    1200, h: 330,
			lines: []textLine{
				{60, 80, "ACME Trading Company"},
				{60, 150, "Date 12/03/2024"},
				{60, 220, "Total due 1,234.56"},
			},
			wantLines: []string{"ACME Trading Company", "Date 12/03/2024", "Total due 1,234.56"},
		},
		{
			name: "two columns",
			w:    1600, h: 330,
			lines: []textLine{
				{60, 80, "Shipping address"}, {900, 80, "Billing address"},
				{60, 150, "Harbour Road 7"}, {900, 150, "Market Street 21"},
				{60, 220, "Rotterdam"}, {900, 220, "Antwerp"},
			},
		},
		{
			name: "table",
			w:    1300, h: 400,
			lines: []textLine{
				{60, 80, "Item"}, {600, 80, "Qty"}, {950, 80, "Price"},
				{60, 160, "Apples"}, {600, 160, "2"}, {950, 160, "3.50"},
				{60, 240, "Bread"}, {600, 240, "1"}, {950, 240, "2.25"},
				{60, 320, "Coffee"}, {600, 320, "12"}, {950, 320, "48.00"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, want := render(t, face, tt.w, tt.h, tt.lines)
			res := recognize(t, c, writeFile(t, "page.png", pngBytes(t, img)))
			checkShape(t, res)
			if res.Pages != 1 || res.Width != tt.w || res.Height != tt.h {
				t.Errorf("pages/size = %d %dx%d, want 1 %dx%d", res.Pages, res.Width, res.Height, tt.w, tt.h)
			}
			checkWords(t, res, want, 1)
			if tt.wantLines != nil {
				if got := texts(res, tracking.LevelLine); !slices.Equal(got, tt.wantLines) {
					t.Errorf("lines = %q, want %q", got, tt.wantLines)
				}
			}
		})
	}
}

func TestRecognizeKorean(t *testing.T) {
	const nanum = "/usr/share/fonts/truetype/nanum/NanumGothic.ttf"
	ttf, err := os.ReadFile(nanum)
	if err != nil {
		t.Skipf("Korean font: %v", err)
	}
	img, _ := render(t, loadFace(t, ttf, 40), 1000, 150, []textLine{{50, 95, "대한민국 서울특별시 영수증"}})
	path := writeFile(t, "kor.png", pngBytes(t, img))
	for _, langs := range []string{"kor", "eng+kor"} {
		t.Run(langs, func(t *testing.T) {
			res := recognize(t, newClient(t, Options{Languages: langs}), path)
			checkShape(t, res)
			// Tesseract splits Hangul words unpredictably ("서 울 특별시"):
			// compare without spaces.
			got := strings.Join(texts(res, tracking.LevelWord), "")
			if want := "대한민국서울특별시영수증"; got != want {
				t.Errorf("%s: got %q, want %q", langs, got, want)
			}
		})
	}
}

// corpusDir is the shared OCR corpus: $DOCPIPE_CORPUS, or shared/corpus
// beside the repository (where CI and the developers have it). A clone
// without it skips the corpus tests, saying so.
func corpusDir(t testing.TB) string {
	t.Helper()
	dirs := []string{os.Getenv("DOCPIPE_CORPUS"), filepath.Join("..", "..", "..", "shared", "corpus"), "/work/shared/corpus"}
	for _, dir := range dirs {
		if dir == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "README.md")); err == nil {
			return dir
		}
	}
	t.Skipf("corpus not found (set DOCPIPE_CORPUS): looked in %q", dirs[1:])
	return ""
}

func TestCorpus(t *testing.T) {
	dir := corpusDir(t)
	c := newClient(t, Options{})
	// Small receipts whose date and total Tesseract reads (checked by
	// hand); the big A4 scans are left to BenchmarkCorpus.
	for _, stem := range []string{"sroie_X51005442327", "sroie_X51005685355", "sroie_X51007339120", "sroie_X51008099071", "tess_phototest"} {
		t.Run(stem, func(t *testing.T) {
			var gt struct {
				Image  string
				Fields map[string]string
				Text   string
			}
			b, err := os.ReadFile(filepath.Join(dir, stem+".json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &gt); err != nil {
				t.Fatal(err)
			}
			res := recognize(t, c, filepath.Join(dir, gt.Image))
			checkShape(t, res)
			text := strings.ToUpper(strings.Join(texts(res, tracking.LevelLine), "\n"))
			var want []string
			if gt.Fields != nil {
				want = []string{gt.Fields["date"], gt.Fields["total"]}
			} else {
				want = []string{"THE QUICK BROWN DOG JUMPED OVER THE"}
			}
			for _, w := range want {
				if !strings.Contains(text, strings.ToUpper(w)) {
					t.Errorf("%q not found in:\n%s", w, text)
				}
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	good := goodImage(t)
	goodPNG, _ := os.ReadFile(good)
	img, _ := render(t, goFace(t), 700, 120, []textLine{{40, 75, "Hello docpipe 2024"}})
	var jpg bytes.Buffer
	if err := jpeg.Encode(&jpg, img, nil); err != nil {
		t.Fatal(err)
	}
	webp, err := os.ReadFile("testdata/blue-purple-pink.lossless.webp")
	if err != nil {
		t.Fatal(err)
	}
	ihdr := []byte{'I', 'H', 'D', 'R', 0, 0, 0x75, 0x30, 0, 0, 0x75, 0x30, 8, 0, 0, 0, 0} // 30000x30000 grey
	hugePNG := append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0d"), ihdr...)
	hugePNG = binary.BigEndian.AppendUint32(hugePNG, crc32.ChecksumIEEE(ihdr))
	hugeBMP := make([]byte, 54)
	copy(hugeBMP, "BM")
	binary.LittleEndian.PutUint32(hugeBMP[10:], 54)
	binary.LittleEndian.PutUint32(hugeBMP[14:], 40)
	binary.LittleEndian.PutUint32(hugeBMP[18:], 30000)
	binary.LittleEndian.PutUint32(hugeBMP[22:], 30000)
	binary.LittleEndian.PutUint16(hugeBMP[26:], 1)
	binary.LittleEndian.PutUint16(hugeBMP[28:], 24)
	hugeTIFF := multiPageTIFF([]*image.Gray{image.NewGray(image.Rect(0, 0, 4, 4))}, 300)
	binary.LittleEndian.PutUint32(hugeTIFF[len(hugeTIFF)-4-12*12+8:], 30000) // ImageWidth
	binary.LittleEndian.PutUint32(hugeTIFF[len(hugeTIFF)-4-11*12+8:], 30000) // ImageLength

	c := newClient(t, Options{})
	tests := []struct {
		name    string
		file    string // "" for a path that does not exist
		data    []byte
		wantMsg string
	}{
		{"missing file", "", nil, "no such file"},
		{"zero bytes", "empty.png", nil, "empty file"},
		{"truncated PNG", "cut.png", goodPNG[:len(goodPNG)/2], "decode PNG"},
		{"PNG header only", "head.png", goodPNG[:40], "PNG"},
		{"truncated JPEG", "cut.jpg", jpg.Bytes()[:jpg.Len()/2], "decode JPEG"},
		{"truncated WebP", "cut.webp", webp[:len(webp)/2], "WebP"},
		{"text named png", "notes.png", []byte("Dear customer,\nplease find attached...\n"), "text file"},
		{"binary garbage", "junk.png", []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xfe, 0xff}, "unknown binary"},
		{"30000x30000 PNG", "huge.png", hugePNG, "too large"},
		{"30000x30000 BMP", "huge.bmp", hugeBMP, "too large"},
		{"30000x30000 TIFF", "huge.tif", hugeTIFF, "too large"},
		{"broken PDF", "broken.pdf", []byte("%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n"), "pdf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "missing.png")
			if tt.file != "" {
				path = writeFile(t, tt.file, tt.data)
			}
			res, err := c.Recognize(context.Background(), path)
			if err == nil {
				t.Fatalf("no error; got %d boxes", len(res.Boxes))
			}
			if !tracking.IsPermanent(err) {
				t.Errorf("error %v is not permanent", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tt.wantMsg)
			}
			t.Log(err)
			assertGood(t, c, good)
		})
	}
	t.Run("directory", func(t *testing.T) {
		_, err := c.Recognize(context.Background(), t.TempDir())
		if !tracking.IsPermanent(err) {
			t.Errorf("error %v is not permanent", err)
		}
		assertGood(t, c, good)
	})
}

func TestFormats(t *testing.T) {
	img, want := render(t, goFace(t), 700, 120, []textLine{{40, 75, "Hello docpipe 2024"}})
	enc := func(f func(*bytes.Buffer) error) []byte {
		var b bytes.Buffer
		if err := f(&b); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"page.png", pngBytes(t, img)},
		{"page.jpg", enc(func(b *bytes.Buffer) error { return jpeg.Encode(b, img, &jpeg.Options{Quality: 95}) })},
		{"page.bmp", enc(func(b *bytes.Buffer) error { return bmp.Encode(b, img) })},
		{"page.tif", enc(func(b *bytes.Buffer) error { return tiff.Encode(b, img, &tiff.Options{Compression: tiff.Deflate}) })},
		{"jpeg-named.png", enc(func(b *bytes.Buffer) error { return jpeg.Encode(b, img, &jpeg.Options{Quality: 95}) })},
	}
	c := newClient(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := recognize(t, c, writeFile(t, tt.name, tt.data))
			checkShape(t, res)
			checkWords(t, res, want, 1)
		})
	}
	t.Run("webp", func(t *testing.T) {
		res := recognize(t, c, "testdata/blue-purple-pink.lossless.webp")
		if res.Pages != 1 || res.Width == 0 {
			t.Errorf("pages %d width %d", res.Pages, res.Width)
		}
	})
}

func TestBlankPage(t *testing.T) {
	c := newClient(t, Options{})
	for _, size := range []image.Point{{1, 1}, {3, 3}, {800, 600}} {
		img, _ := render(t, goFace(t), size.X, size.Y, nil)
		res := recognize(t, c, writeFile(t, "blank.png", pngBytes(t, img)))
		if len(res.Boxes) != 0 || res.Pages != 1 {
			t.Errorf("%v blank page: %d boxes %q, %d pages", size, len(res.Boxes), texts(res, tracking.LevelWord), res.Pages)
		}
	}
	assertGood(t, c, goodImage(t))
}

func TestMultiPageTIFF(t *testing.T) {
	face := goFace(t)
	p1, w1 := render(t, face, 800, 140, []textLine{{40, 85, "First page here"}})
	p2, w2 := render(t, face, 900, 260, []textLine{{40, 85, "Second page"}, {40, 180, "Total 99.95"}})
	path := writeFile(t, "two.tif", multiPageTIFF([]*image.Gray{p1, p2}, 300))
	res := recognize(t, newClient(t, Options{}), path)
	checkShape(t, res)
	if res.Pages != 2 || res.Width != 800 || res.Height != 140 {
		t.Errorf("pages %d size %dx%d, want 2 800x140", res.Pages, res.Width, res.Height)
	}
	checkWords(t, res, w1, 1)
	checkWords(t, res, w2, 2)

	t.Run("page limit", func(t *testing.T) {
		_, err := newClient(t, Options{MaxPages: 1}).Recognize(context.Background(), path)
		if !tracking.IsPermanent(err) || !strings.Contains(err.Error(), "more than 1 pages") {
			t.Errorf("err = %v", err)
		}
	})
}

func TestPDF(t *testing.T) {
	if _, err := exec.LookPath("pdftoppm"); err != nil {
		t.Skip("pdftoppm not installed")
	}
	face := goFace(t)
	p1, w1 := render(t, face, 800, 140, []textLine{{40, 85, "First page here"}})
	p2, w2 := render(t, face, 800, 140, []textLine{{40, 85, "Second page 42"}})
	// The tesseract CLI turns a TIFF into a real PDF with the page as an
	// image at the TIFF's resolution; rendered back at 300 dpi the pixels
	// line up with what was drawn.
	tif := writeFile(t, "two.tif", multiPageTIFF([]*image.Gray{p1, p2}, 300))
	base := filepath.Join(t.TempDir(), "two")
	if out, err := exec.Command("tesseract", tif, base, "pdf").CombinedOutput(); err != nil {
		t.Fatalf("make PDF: %v\n%s", err, out)
	}
	pdf, err := os.ReadFile(base + ".pdf")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	c := newClient(t, Options{DPI: 300, TempDir: tmp})
	for _, name := range []string{"two.pdf", "pdf-named.png"} {
		t.Run(name, func(t *testing.T) {
			res := recognize(t, c, writeFile(t, name, pdf))
			checkShape(t, res)
			if res.Pages != 2 || res.Width != 800 || res.Height != 140 {
				t.Errorf("pages %d size %dx%d, want 2 800x140", res.Pages, res.Width, res.Height)
			}
			checkWords(t, res, w1, 1)
			checkWords(t, res, w2, 2)
			if left, _ := os.ReadDir(tmp); len(left) != 0 {
				t.Errorf("temp dir not cleaned: %v", left)
			}
		})
	}
	t.Run("pixel limit", func(t *testing.T) {
		_, err := newClient(t, Options{DPI: 2400, MaxPixels: 1_000_000}).Recognize(context.Background(), writeFile(t, "big.pdf", pdf))
		if !tracking.IsPermanent(err) || !strings.Contains(err.Error(), "too large") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("page limit", func(t *testing.T) {
		_, err := newClient(t, Options{MaxPages: 1}).Recognize(context.Background(), writeFile(t, "long.pdf", pdf))
		if !tracking.IsPermanent(err) || !strings.Contains(err.Error(), "over the limit of 1") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := c.Recognize(ctx, writeFile(t, "c.pdf", pdf))
		if err == nil || tracking.IsPermanent(err) {
			t.Errorf("err = %v, want a non-permanent context error", err)
		}
	})
}

func TestEXIFOrientation(t *testing.T) {
	upright, want := render(t, goFace(t), 900, 150, []textLine{{50, 90, "Invoice number 12345"}})
	var jpg bytes.Buffer
	if err := jpeg.Encode(&jpg, rotateCCW(upright), &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, Options{})
	for _, bo := range []binary.AppendByteOrder{binary.LittleEndian, binary.BigEndian} {
		res := recognize(t, c, writeFile(t, "sideways.jpg", withEXIFOrientation(jpg.Bytes(), 6, bo)))
		checkShape(t, res)
		if res.Width != 900 || res.Height != 150 {
			t.Errorf("%v: size %dx%d, want the upright 900x150", bo, res.Width, res.Height)
		}
		checkWords(t, res, want, 1)
	}
}

func TestCloseTwice(t *testing.T) {
	c := newClient(t, Options{})
	assertGood(t, c, goodImage(t))
	for range 3 {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Recognize(context.Background(), goodImage(t)); err == nil {
		t.Error("Recognize after Close succeeded")
	}
	unused := newClient(t, Options{})
	unused.Close()
	unused.Close()
}

func TestRecycleAfter(t *testing.T) {
	c := newClient(t, Options{RecycleAfter: 2})
	good := goodImage(t)
	var engines []any
	for range 5 {
		assertGood(t, c, good)
		c.mu.Lock()
		engines = append(engines, c.tess)
		c.mu.Unlock()
	}
	// pages 1–2 on the first engine, 3–4 on a second, 5 on a third
	if engines[0] != engines[1] || engines[1] == engines[2] || engines[2] != engines[3] || engines[3] == engines[4] {
		t.Errorf("engines not recycled every 2 pages: %p", engines)
	}
}

func TestOptions(t *testing.T) {
	tests := []struct {
		opts    Options
		wantErr bool
	}{
		{Options{}, false},
		{Options{Languages: "eng+kor", PSM: 3, DPI: 150}, false},
		{Options{Languages: "eng;rm -rf"}, true},
		{Options{Languages: "+eng"}, true},
		{Options{PSM: 2}, true},
		{Options{PSM: 14}, true},
		{Options{DPI: 10}, true},
		{Options{MaxPixels: -1}, true},
	}
	for _, tt := range tests {
		_, err := NewClient(tt.opts)
		if (err != nil) != tt.wantErr {
			t.Errorf("NewClient(%+v) err = %v, want error %v", tt.opts, err, tt.wantErr)
		}
	}
	t.Run("missing languages", func(t *testing.T) {
		// Several missing languages would overflow gosseract's 512-byte
		// Init error buffer; they must be refused before Init.
		c := newClient(t, Options{Languages: "eng+xyzlanguage+abclanguage+qqqlanguage"})
		_, err := c.Recognize(context.Background(), goodImage(t))
		if !tracking.IsPermanent(err) || !strings.Contains(err.Error(), `"xyzlanguage" is not installed`) {
			t.Errorf("err = %v, want permanent, naming the language", err)
		}
	})
	t.Run("psm reaches tesseract", func(t *testing.T) {
		img, _ := render(t, goFace(t), 900, 260, []textLine{{40, 80, "First line"}, {40, 200, "Second line"}})
		path := writeFile(t, "two-lines.png", pngBytes(t, img))
		for _, tt := range []struct{ psm, lines int }{{6, 2}, {7, 1}} {
			res := recognize(t, newClient(t, Options{PSM: tt.psm}), path)
			if got := texts(res, tracking.LevelLine); len(got) != tt.lines {
				t.Errorf("psm %d: lines %q, want %d", tt.psm, got, tt.lines)
			}
		}
	})
}

func TestThreadLimitSet(t *testing.T) {
	t.Setenv("OMP_THREAD_LIMIT", "1")
	if !ThreadLimitSet() {
		t.Error("OMP_THREAD_LIMIT=1 not seen")
	}
	t.Setenv("OMP_THREAD_LIMIT", "")
	if ThreadLimitSet() {
		t.Error("unset OMP_THREAD_LIMIT seen as set")
	}
}
