package ocr

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/docpipe/docpipe/tracking"
)

// pdfPageSize is one page's size in points, with its /Rotate applied.
type pdfPageSize struct{ w, h float64 }

// pdfInfo runs pdfinfo on path and returns the size of every page. A file
// poppler cannot parse is a permanent error.
func (c *Client) pdfInfo(ctx context.Context, path string) ([]pdfPageSize, error) {
	out, err := c.runTool(ctx, c.opts.Pdfinfo, "-f", "1", "-l", strconv.Itoa(c.opts.MaxPages+1), path)
	if err != nil {
		return nil, err
	}
	var n int
	var sizes []pdfPageSize
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "Pages:"); ok {
			if n, err = strconv.Atoi(strings.TrimSpace(v)); err != nil {
				return nil, tracking.Permanent(fmt.Errorf("pdfinfo: bad page count %q", v))
			}
			continue
		}
		// "Page    1 size: 595.276 x 841.89 pts (A4)" and "Page    1 rot:  90"
		f := strings.Fields(line)
		if len(f) >= 6 && f[0] == "Page" && f[2] == "size:" && f[4] == "x" {
			w, err1 := strconv.ParseFloat(f[3], 64)
			h, err2 := strconv.ParseFloat(f[5], 64)
			if err1 != nil || err2 != nil {
				return nil, tracking.Permanent(fmt.Errorf("pdfinfo: bad page size %q", line))
			}
			sizes = append(sizes, pdfPageSize{w, h})
		}
		if len(f) >= 4 && f[0] == "Page" && f[2] == "rot:" && len(sizes) > 0 {
			if r, _ := strconv.Atoi(f[3]); r%180 != 0 {
				s := &sizes[len(sizes)-1]
				s.w, s.h = s.h, s.w
			}
		}
	}
	switch {
	case n == 0:
		return nil, tracking.Permanent(errors.New("PDF has no pages"))
	case n > c.opts.MaxPages:
		return nil, tracking.Permanent(fmt.Errorf("PDF has %d pages, over the limit of %d", n, c.opts.MaxPages))
	case len(sizes) != n:
		return nil, tracking.Permanent(fmt.Errorf("pdfinfo listed %d page sizes for %d pages", len(sizes), n))
	}
	return sizes, nil
}

// rasterisePDF renders each page of the PDF in data with pdftoppm at dpi
// and calls fn with it, one page at a time, in a temporary directory that
// is removed before it returns. Pages over the pixel limit are refused
// from their size in points, before rendering.
func (c *Client) rasterisePDF(ctx context.Context, data []byte, dpi int, fn func(page int, r raster) error) error {
	dir, err := os.MkdirTemp(c.opts.TempDir, "docpipe-ocr-*")
	if err != nil {
		return fmt.Errorf("rasterise PDF: %w", err)
	}
	defer os.RemoveAll(dir)
	in := filepath.Join(dir, "in.pdf")
	if err := os.WriteFile(in, data, 0o600); err != nil {
		return fmt.Errorf("rasterise PDF: %w", err)
	}
	sizes, err := c.pdfInfo(ctx, in)
	if err != nil {
		return err
	}
	for i, s := range sizes {
		page := i + 1
		w, h := int(s.w/72*float64(dpi)+0.5), int(s.h/72*float64(dpi)+0.5)
		if err := checkDims(w, h, c.opts.MaxPixels); err != nil {
			return tracking.Permanent(fmt.Errorf("PDF page %d at %d dpi: %w", page, dpi, err))
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		out := filepath.Join(dir, fmt.Sprintf("p%d", page))
		if _, err := c.runTool(ctx, c.opts.Pdftoppm, "-r", strconv.Itoa(dpi), "-gray", "-singlefile",
			"-f", strconv.Itoa(page), "-l", strconv.Itoa(page), in, out); err != nil {
			return fmt.Errorf("PDF page %d: %w", page, err)
		}
		pgm, err := os.ReadFile(out + ".pgm")
		if err != nil {
			return fmt.Errorf("PDF page %d: %w", page, err)
		}
		os.Remove(out + ".pgm")
		r, err := rasterFromPNM(pgm, c.opts.MaxPixels)
		if err != nil {
			return tracking.Permanent(fmt.Errorf("PDF page %d: %w", page, err))
		}
		if err := fn(page, r); err != nil {
			return err
		}
	}
	return nil
}

// runTool runs a poppler tool with the per-call timeout. A tool that
// exits non-zero or times out on this input is a permanent error (the
// same file would fail again); a missing tool or a cancelled ctx is not.
func (c *Client) runTool(ctx context.Context, name string, args ...string) ([]byte, error) {
	tctx, cancel := context.WithTimeout(ctx, c.opts.PDFTimeout)
	defer cancel()
	cmd := exec.CommandContext(tctx, name, args...)
	cmd.WaitDelay = c.opts.PDFTimeout / 10
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	switch {
	case err == nil:
		return stdout.Bytes(), nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case tctx.Err() != nil:
		return nil, tracking.Permanent(fmt.Errorf("%s: timed out after %s", filepath.Base(name), c.opts.PDFTimeout))
	case errors.Is(err, exec.ErrNotFound):
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	msg := strings.TrimSpace(stderr.String())
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	return nil, tracking.Permanent(fmt.Errorf("%s: %w: %s", filepath.Base(name), err, msg))
}
