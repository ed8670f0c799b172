// Package ocr is docpipe's OCR stage: it turns an image file (PNG, JPEG,
// TIFF, BMP, WebP, GIF) or a PDF into words and lines with confidences
// and boxes, using Tesseract through gosseract.
//
// Every input is identified by its magic bytes, checked against a pixel
// limit from its header, decoded completely in Go and handed to Tesseract
// as a freshly encoded PNM, so Tesseract never sees a file it could
// misread (gosseract does not report undecodable bytes, and the next
// recognition on that client crashes the process). Bad input is a
// tracking.Permanent error.
//
// Tesseract must run single-threaded inside docpipe: its OpenMP threads
// fight the stage's own workers and cost more than they give. OpenMP reads
// OMP_THREAD_LIMIT only when the process starts, so it must be in the
// environment before docpipe runs (the Makefile, the systemd unit or a
// re-exec in main sets it); see ThreadLimitSet.
package ocr

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/otiai10/gosseract/v2"

	"github.com/docpipe/docpipe/tracking"
)

// Defaults of Options.
const (
	DefaultLanguages    = "eng"
	DefaultPSM          = 6 // single uniform block: best of 3, 4, 6, 11 on the receipt corpus
	DefaultDPI          = 300
	DefaultRecycleAfter = 100
	DefaultMaxPixels    = 100_000_000
	DefaultMaxPages     = 100
	DefaultMaxFileBytes = 256 << 20
	DefaultPDFTimeout   = 2 * time.Minute
)

// Options configure a Client. The zero value is usable: every zero field
// takes its default.
type Options struct {
	// Languages are Tesseract language codes joined by "+", e.g. "eng",
	// "kor" or "eng+kor". Default "eng".
	Languages string
	// PSM is Tesseract's page segmentation mode (1, 3–13); 0 means
	// DefaultPSM.
	PSM int
	// DPI is the resolution assumed for images that declare none (or a
	// placeholder 72/96 dpi), and the resolution PDFs are rendered at.
	// Default 300.
	DPI int
	// RecycleAfter closes and recreates the Tesseract engine after this
	// many pages, because its memory grows slowly. Default 100 (DefaultRecycleAfter); negative
	// never recycles.
	RecycleAfter int
	// MaxPixels refuses any page larger than this, from its header.
	// Default 100 megapixels.
	MaxPixels int
	// MaxPages refuses TIFFs and PDFs with more pages. Default 100.
	MaxPages int
	// MaxFileBytes refuses larger files before reading them. Default 256 MiB.
	MaxFileBytes int64
	// PDFTimeout bounds each pdfinfo/pdftoppm run. Default 2 minutes.
	PDFTimeout time.Duration
	// TempDir is where PDFs are rasterised; default os.TempDir().
	TempDir string
	// Pdftoppm and Pdfinfo are the poppler tools; default found in PATH.
	Pdftoppm, Pdfinfo string
}

var langPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]*(\+[A-Za-z][A-Za-z0-9_]*)*$`)

// withDefaults fills zero fields and validates the result.
func (o Options) withDefaults() (Options, error) {
	if o.Languages == "" {
		o.Languages = DefaultLanguages
	}
	if o.PSM == 0 {
		o.PSM = DefaultPSM
	}
	if o.DPI == 0 {
		o.DPI = DefaultDPI
	}
	if o.RecycleAfter == 0 {
		o.RecycleAfter = DefaultRecycleAfter
	}
	if o.MaxPixels == 0 {
		o.MaxPixels = DefaultMaxPixels
	}
	if o.MaxPages == 0 {
		o.MaxPages = DefaultMaxPages
	}
	if o.MaxFileBytes == 0 {
		o.MaxFileBytes = DefaultMaxFileBytes
	}
	if o.PDFTimeout == 0 {
		o.PDFTimeout = DefaultPDFTimeout
	}
	if o.Pdftoppm == "" {
		o.Pdftoppm = "pdftoppm"
	}
	if o.Pdfinfo == "" {
		o.Pdfinfo = "pdfinfo"
	}
	switch {
	case !langPattern.MatchString(o.Languages):
		return o, fmt.Errorf("ocr: bad languages %q (want codes like eng or eng+kor)", o.Languages)
	case o.PSM < 1 || o.PSM == 2 || o.PSM > 13:
		return o, fmt.Errorf("ocr: bad psm %d (want 1 or 3–13)", o.PSM)
	case o.DPI < 70 || o.DPI > 2400:
		return o, fmt.Errorf("ocr: bad dpi %d (want 70–2400)", o.DPI)
	case o.MaxPixels < 0 || o.MaxPages < 0 || o.MaxFileBytes < 0 || o.PDFTimeout < 0:
		return o, errors.New("ocr: negative limit")
	}
	return o, nil
}

// Client recognises documents with one Tesseract engine, created on first
// use and reused across pages, so language data is loaded once (and again
// only every RecycleAfter pages). A Client is safe for concurrent use, but
// recognises one page at a time; use one Client per worker.
type Client struct {
	mu     sync.Mutex
	opts   Options
	tess   *gosseract.Client // nil until needed, and after a recycle
	pages  int               // recognised by tess
	closed bool
}

// NewClient validates opts and returns a Client. It does not load
// Tesseract yet: the first Recognize does.
func NewClient(opts Options) (*Client, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Client{opts: o}, nil
}

// Options returns the client's options with defaults filled in.
func (c *Client) Options() Options { return c.opts }

// Close frees the Tesseract engine. It is idempotent: later calls, and
// Recognize after Close, do nothing harmful.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.closeTess()
	return nil
}

// closeTess frees the engine once; gosseract crashes on a double close.
func (c *Client) closeTess() {
	if c.tess != nil {
		c.tess.Close()
		c.tess = nil
		c.pages = 0
	}
}

// initMu serialises Tesseract initialisation across the process. It is
// the package's one piece of global state, and guards a global resource:
// gosseract's Init points the process's stderr (fd 2) at /dev/null and
// back, so two concurrent Inits can leave stderr pointing at /dev/null for
// good.
var initMu sync.Mutex

// blankPage is an 8×8 white page, recognised once to initialise a new
// engine under initMu.
func blankPage() raster { return raster{w: 8, h: 8, ch: 1, pix: bytes.Repeat([]byte{255}, 64)} }

// engine returns the live Tesseract engine, recycling it when it has
// recognised RecycleAfter pages. A new engine is initialised (language
// data loaded) here, under initMu, after checking that every language is
// installed: gosseract captures Init's error messages in a 512-byte
// buffer that several missing languages overflow.
func (c *Client) engine() (*gosseract.Client, error) {
	if c.tess != nil && c.opts.RecycleAfter > 0 && c.pages >= c.opts.RecycleAfter {
		c.closeTess()
	}
	if c.tess != nil {
		return c.tess, nil
	}
	initMu.Lock()
	defer initMu.Unlock()
	have, err := gosseract.GetAvailableLanguages()
	if err != nil {
		return nil, fmt.Errorf("tesseract languages: %w", err)
	}
	langs := strings.Split(c.opts.Languages, "+")
	for _, l := range langs {
		if !slices.Contains(have, l) {
			return nil, tracking.Permanent(fmt.Errorf("tesseract language %q is not installed (have %s)", l, strings.Join(have, ", ")))
		}
	}
	t := gosseract.NewClient()
	t.Languages = langs
	t.Trim = false
	t.SetVariable("tessedit_pageseg_mode", strconv.Itoa(c.opts.PSM))
	t.SetVariable(gosseract.DEBUG_FILE, os.DevNull)
	if err := t.SetImageFromBytes(blankPage().pnm()); err != nil {
		t.Close()
		return nil, fmt.Errorf("tesseract init: %w", err)
	}
	if _, err := t.GetBoundingBoxesVerbose(); err != nil {
		t.Close()
		return nil, tracking.Permanent(fmt.Errorf("tesseract init (languages %q): %w", c.opts.Languages, err))
	}
	c.tess = t
	return t, nil
}

// Recognize OCRs the image or PDF at path, every page, and returns its
// words (Level "word") and lines (Level "line") in reading order: each
// line is followed by its words, and Seq numbers all boxes from 0 across
// pages. Boxes are in pixels of the upright page (after EXIF rotation;
// for a PDF, at Options.DPI), Confidence is 0–1, and Width/Height are the
// first page's. A page without text adds no boxes.
//
// Unreadable, undecodable, unsupported or oversized input returns an
// error wrapped with tracking.Permanent. ctx is checked between pages; a
// page in progress is not interrupted.
func (c *Client) Recognize(ctx context.Context, path string) (*tracking.OCRResult, error) {
	data, err := c.readFile(path)
	if err != nil {
		return nil, err
	}
	f, err := sniff(data)
	if err != nil {
		return nil, tracking.Permanent(fmt.Errorf("ocr %s: %w", path, err))
	}
	res := &tracking.OCRResult{ImagePath: path, Status: tracking.OCRSuccess}
	err = c.eachPage(ctx, f, data, func(page int, r raster, dpi float64) error {
		if page == 1 {
			res.Width, res.Height = r.w, r.h
		}
		res.Pages = page
		boxes, err := c.recognizePage(r, c.effectiveDPI(dpi))
		if err != nil {
			return fmt.Errorf("page %d: %w", page, err)
		}
		res.Boxes = appendBoxes(res.Boxes, boxes, page)
		return nil
	})
	if err != nil {
		if tracking.IsPermanent(err) {
			var p *tracking.PermanentError
			errors.As(err, &p)
			return nil, tracking.Permanent(fmt.Errorf("ocr %s (%s): %w", path, f, p.Err))
		}
		return nil, fmt.Errorf("ocr %s (%s): %w", path, f, err)
	}
	return res, nil
}

// readFile reads path whole, within MaxFileBytes. Missing, unreadable and
// oversized files are permanent errors.
func (c *Client) readFile(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
			return nil, tracking.Permanent(fmt.Errorf("ocr: %w", err))
		}
		return nil, fmt.Errorf("ocr: %w", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("ocr: %w", err)
	}
	switch {
	case st.IsDir():
		return nil, tracking.Permanent(fmt.Errorf("ocr %s: is a directory", path))
	case st.Size() > c.opts.MaxFileBytes:
		return nil, tracking.Permanent(fmt.Errorf("ocr %s: file of %d bytes is over the limit of %d", path, st.Size(), c.opts.MaxFileBytes))
	}
	data, err := io.ReadAll(io.LimitReader(fh, c.opts.MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("ocr: read %s: %w", path, err)
	}
	if int64(len(data)) > c.opts.MaxFileBytes {
		return nil, tracking.Permanent(fmt.Errorf("ocr %s: file is over the limit of %d bytes", path, c.opts.MaxFileBytes))
	}
	return data, nil
}

// effectiveDPI is the resolution Tesseract is told for a page that
// declares dpi: the declared one when it is credible, else Options.DPI.
// 72 and 96 are the values writers put in when they know nothing.
func (c *Client) effectiveDPI(dpi float64) int {
	d := int(math.Round(dpi))
	if d < 70 || d > 2400 || d == 72 || d == 96 {
		return c.opts.DPI
	}
	return d
}

// eachPage decodes every page of data in turn and calls fn with it (page is
// 1-based, dpi what the page declares or 0), checking ctx between pages.
// Decoding errors come back permanent.
func (c *Client) eachPage(ctx context.Context, f format, data []byte, fn func(page int, r raster, dpi float64) error) error {
	perm := func(err error) error { return tracking.Permanent(err) }
	switch f {
	case formatPDF:
		return c.rasterisePDF(ctx, data, c.opts.DPI, func(page int, r raster) error {
			return fn(page, r, float64(c.opts.DPI))
		})
	case formatTIFF:
		pages, err := tiffPages(data, c.opts.MaxPages)
		if err != nil {
			return perm(err)
		}
		for i, p := range pages {
			if err := ctx.Err(); err != nil {
				return err
			}
			r, err := decodeImage(f, func() io.Reader { return newTIFFPageReader(data, p.offset) }, c.opts.MaxPixels)
			if err != nil {
				return perm(fmt.Errorf("page %d: %w", i+1, err))
			}
			if err := fn(i+1, r, p.dpi); err != nil {
				return err
			}
		}
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r, err := decodeImage(f, func() io.Reader { return bytes.NewReader(data) }, c.opts.MaxPixels)
	if err != nil {
		return perm(err)
	}
	var dpi float64
	switch f {
	case formatJPEG:
		var o int
		o, dpi = jpegMeta(data)
		r = orient(r, o)
	case formatPNG:
		dpi = pngDPI(data)
	case formatBMP:
		dpi = bmpDPI(data)
	}
	return fn(1, r, dpi)
}

// recognizePage runs Tesseract once on one page: a single recognition
// that yields words with their block/paragraph/line numbers, from which
// lines are built. (A second GetBoundingBoxes or Text call would
// recognise the page again.)
func (c *Client) recognizePage(r raster, dpi int) ([]gosseract.BoundingBox, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("ocr: client closed")
	}
	t, err := c.engine()
	if err != nil {
		return nil, err
	}
	if err := t.SetImageFromBytes(r.pnm()); err != nil {
		return nil, fmt.Errorf("tesseract set image: %w", err)
	}
	t.SetVariable("user_defined_dpi", strconv.Itoa(dpi))
	boxes, err := t.GetBoundingBoxesVerbose()
	if err != nil {
		// The engine was initialised in engine(), so this is unexpected:
		// start afresh next time.
		c.closeTess()
		return nil, fmt.Errorf("tesseract: %w", err)
	}
	c.pages++
	trimHeap()
	return boxes, nil
}

// appendBoxes converts one page's word boxes to TextBoxes, grouping words
// into lines by their block/paragraph/line numbers and emitting each line
// before its words. Empty words (Tesseract reports one for a blank page)
// are dropped.
func appendBoxes(out []tracking.TextBox, words []gosseract.BoundingBox, page int) []tracking.TextBox {
	seq := len(out)
	for i := 0; i < len(words); {
		j := i
		for j < len(words) && words[j].BlockNum == words[i].BlockNum &&
			words[j].ParNum == words[i].ParNum && words[j].LineNum == words[i].LineNum {
			j++
		}
		var line []gosseract.BoundingBox
		for _, w := range words[i:j] {
			if strings.TrimSpace(w.Word) != "" {
				line = append(line, w)
			}
		}
		i = j
		if len(line) == 0 {
			continue
		}
		texts := make([]string, len(line))
		lb := line[0].Box
		var conf float64
		for k, w := range line {
			texts[k] = strings.TrimSpace(w.Word)
			lb = lb.Union(w.Box)
			conf += w.Confidence
		}
		out = append(out, tracking.TextBox{
			Text:       strings.Join(texts, " "),
			Confidence: confidence(conf / float64(len(line))),
			BBox:       tracking.Rect(float64(lb.Min.X), float64(lb.Min.Y), float64(lb.Max.X), float64(lb.Max.Y)),
			Page:       page,
			Level:      tracking.LevelLine,
			Seq:        seq,
		})
		seq++
		for k, w := range line {
			out = append(out, tracking.TextBox{
				Text:       texts[k],
				Confidence: confidence(w.Confidence),
				BBox:       tracking.Rect(float64(w.Box.Min.X), float64(w.Box.Min.Y), float64(w.Box.Max.X), float64(w.Box.Max.Y)),
				Page:       page,
				Level:      tracking.LevelWord,
				Seq:        seq,
			})
			seq++
		}
	}
	return out
}

// confidence maps Tesseract's 0–100 to 0–1.
func confidence(c float64) float64 {
	return math.Round(min(max(c/100, 0), 1)*1e4) / 1e4
}

// ThreadLimitSet reports whether OMP_THREAD_LIMIT=1 was in the
// environment, as docpipe needs before the process starts (OpenMP reads
// it once, at load). The caller (cmd/docpipe) should set it and re-exec,
// or refuse to start, when it is false; this package never sets it.
func ThreadLimitSet() bool {
	return os.Getenv("OMP_THREAD_LIMIT") == "1"
}

// reconfigure switches the client to opts, whose Languages must equal the
// current ones: PSM and DPI are Tesseract variables, set without
// reloading language data.
func (c *Client) reconfigure(opts Options) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.opts = opts
	if c.tess != nil {
		c.tess.SetVariable("tessedit_pageseg_mode", strconv.Itoa(opts.PSM))
	}
}
