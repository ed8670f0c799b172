package ocr

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"unicode/utf8"

	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"
	"golang.org/x/image/webp"
)

// format is an input's real format, found from its first bytes.
type format string

const (
	formatPNG  format = "PNG"
	formatJPEG format = "JPEG"
	formatTIFF format = "TIFF"
	formatBMP  format = "BMP"
	formatWebP format = "WebP"
	formatGIF  format = "GIF"
	formatPDF  format = "PDF"
)

// errUnsupported is wrapped by sniff when the bytes are no format docpipe
// reads.
var errUnsupported = errors.New("unsupported file format")

// sniff identifies data by its magic bytes, ignoring any file name.
func sniff(data []byte) (format, error) {
	switch {
	case len(data) == 0:
		return "", errors.New("empty file (0 bytes)")
	case bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")):
		return formatPNG, nil
	case bytes.HasPrefix(data, []byte{0xFF, 0xD8, 0xFF}):
		return formatJPEG, nil
	case bytes.HasPrefix(data, []byte("II*\x00")), bytes.HasPrefix(data, []byte("MM\x00*")):
		return formatTIFF, nil
	case bytes.HasPrefix(data, []byte("BM")) && len(data) >= 26:
		return formatBMP, nil
	case len(data) >= 12 && string(data[:4]) == "RIFF" && string(data[8:12]) == "WEBP":
		return formatWebP, nil
	case bytes.HasPrefix(data, []byte("GIF87a")), bytes.HasPrefix(data, []byte("GIF89a")):
		return formatGIF, nil
	case bytes.Contains(data[:min(len(data), 1024)], []byte("%PDF-")):
		return formatPDF, nil // the PDF spec lets the header sit anywhere in the first 1024 bytes
	case bytes.HasPrefix(data, []byte("II+\x00")), bytes.HasPrefix(data, []byte("MM\x00+")):
		return "", fmt.Errorf("%w: BigTIFF", errUnsupported)
	}
	if looksLikeText(data[:min(len(data), 512)]) {
		return "", fmt.Errorf("%w: looks like a text file, not an image or PDF", errUnsupported)
	}
	return "", fmt.Errorf("%w: unknown binary data (starts % x)", errUnsupported, data[:min(len(data), 8)])
}

// looksLikeText reports whether head is UTF-8 without NUL bytes,
// allowing a rune cut off at its end.
func looksLikeText(head []byte) bool {
	if bytes.IndexByte(head, 0) >= 0 {
		return false
	}
	for cut := 0; cut < 4 && cut <= len(head); cut++ {
		if utf8.Valid(head[:len(head)-cut]) {
			return true
		}
	}
	return false
}

// checkDims refuses a page whose header claims more than maxPixels pixels
// (or no pixels at all), before anything allocates for it.
func checkDims(w, h, maxPixels int) error {
	if w <= 0 || h <= 0 {
		return fmt.Errorf("image has no pixels (%dx%d)", w, h)
	}
	if int64(w)*int64(h) > int64(maxPixels) {
		return fmt.Errorf("image too large: %dx%d is %.1f megapixels, over the limit of %.1f", w, h,
			float64(w)*float64(h)/1e6, float64(maxPixels)/1e6)
	}
	return nil
}

// imageCodec is a format's header reader and decoder, called directly
// (not through image.Decode's global registry).
type imageCodec struct {
	config func(io.Reader) (image.Config, error)
	decode func(io.Reader) (image.Image, error)
}

// codec returns the codec of a raster format; ok is false for PDF.
func codec(f format) (c imageCodec, ok bool) {
	switch f {
	case formatPNG:
		return imageCodec{png.DecodeConfig, png.Decode}, true
	case formatJPEG:
		return imageCodec{jpeg.DecodeConfig, jpeg.Decode}, true
	case formatTIFF:
		return imageCodec{tiff.DecodeConfig, tiff.Decode}, true
	case formatBMP:
		return imageCodec{bmp.DecodeConfig, bmp.Decode}, true
	case formatWebP:
		return imageCodec{webp.DecodeConfig, webp.Decode}, true
	case formatGIF:
		return imageCodec{gif.DecodeConfig, gif.Decode}, true
	}
	return imageCodec{}, false
}

// decodeImage checks the header of one image against maxPixels, then
// decodes it fully (which catches truncation and corruption) into a
// raster. open returns a fresh reader over the image each time it is
// called (for a TIFF, over one page: see tiffPageReader).
//
// A panic inside a decoder (pure Go, so recovering is safe) is turned into
// an error: one malformed file must not take the daemon down.
func decodeImage(f format, open func() io.Reader, maxPixels int) (r raster, err error) {
	defer func() {
		if p := recover(); p != nil {
			r, err = raster{}, fmt.Errorf("decode %s: decoder panicked: %v", f, p)
		}
	}()
	c, ok := codec(f)
	if !ok {
		return raster{}, fmt.Errorf("%w: %s", errUnsupported, f)
	}
	cfg, err := c.config(open())
	if err != nil {
		return raster{}, fmt.Errorf("read %s header: %w", f, err)
	}
	if err := checkDims(cfg.Width, cfg.Height, maxPixels); err != nil {
		return raster{}, err
	}
	img, err := c.decode(open())
	if err != nil {
		return raster{}, fmt.Errorf("decode %s: %w", f, err)
	}
	if b := img.Bounds(); b.Dx() != cfg.Width || b.Dy() != cfg.Height {
		return raster{}, fmt.Errorf("decode %s: header says %dx%d, pixels are %dx%d", f, cfg.Width, cfg.Height, b.Dx(), b.Dy())
	}
	return toRaster(img), nil
}

// pngDPI returns the vertical resolution from a PNG's pHYs chunk, or 0.
func pngDPI(data []byte) float64 {
	i := 8
	for i+12 <= len(data) {
		n := int(binary.BigEndian.Uint32(data[i : i+4]))
		typ := string(data[i+4 : i+8])
		if n < 0 || n > len(data)-i-12 || typ == "IDAT" || typ == "IEND" {
			return 0
		}
		if typ == "pHYs" && n == 9 {
			c := data[i+8 : i+17]
			if c[8] == 1 { // unit: metre
				return float64(binary.BigEndian.Uint32(c[4:8])) * 0.0254
			}
			return 0
		}
		i += 12 + n
	}
	return 0
}

// bmpDPI returns the vertical resolution from a BMP info header, or 0.
func bmpDPI(data []byte) float64 {
	if len(data) < 46 || binary.LittleEndian.Uint32(data[14:18]) < 40 {
		return 0
	}
	return float64(int32(binary.LittleEndian.Uint32(data[42:46]))) * 0.0254
}

// maxTIFFPages bounds how many IFDs tiffPages will follow, whatever the
// caller's page limit, so a looping or absurd chain stays cheap.
const maxTIFFPages = 10000

// tiffPage is one image file directory (page) of a TIFF.
type tiffPage struct {
	offset uint32  // of its IFD
	dpi    float64 // from YResolution/ResolutionUnit, 0 when absent
}

// tiffPages walks a TIFF's IFD chain, returning each page's IFD offset
// and resolution. It refuses loops and chains longer than maxPages.
func tiffPages(data []byte, maxPages int) ([]tiffPage, error) {
	if len(data) < 8 {
		return nil, errors.New("TIFF header truncated")
	}
	var bo binary.ByteOrder = binary.LittleEndian
	if data[0] == 'M' {
		bo = binary.BigEndian
	}
	var pages []tiffPage
	seen := map[uint32]bool{}
	off := bo.Uint32(data[4:8])
	for off != 0 {
		if seen[off] {
			return nil, errors.New("TIFF page chain loops")
		}
		seen[off] = true
		if len(pages) >= maxPages || len(pages) >= maxTIFFPages {
			return nil, fmt.Errorf("TIFF has more than %d pages", min(maxPages, maxTIFFPages))
		}
		if uint64(off)+2 > uint64(len(data)) {
			return nil, fmt.Errorf("TIFF page %d: directory offset %d past end of file (%d bytes)", len(pages)+1, off, len(data))
		}
		n := uint64(bo.Uint16(data[off : off+2]))
		end := uint64(off) + 2 + n*12
		if end+4 > uint64(len(data)) {
			return nil, fmt.Errorf("TIFF page %d: directory truncated", len(pages)+1)
		}
		p := tiffPage{offset: off}
		var yres float64
		unit := uint16(2)
		for k := range n {
			e := uint64(off) + 2 + k*12
			tag, typ := bo.Uint16(data[e:e+2]), bo.Uint16(data[e+2:e+4])
			switch {
			case tag == 283 && typ == 5: // YResolution, RATIONAL at an offset
				v := uint64(bo.Uint32(data[e+8 : e+12]))
				if v+8 <= uint64(len(data)) {
					num, den := bo.Uint32(data[v:v+4]), bo.Uint32(data[v+4:v+8])
					if den != 0 {
						yres = float64(num) / float64(den)
					}
				}
			case tag == 296 && typ == 3: // ResolutionUnit
				unit = bo.Uint16(data[e+8 : e+10])
			}
		}
		switch unit {
		case 2:
			p.dpi = yres
		case 3:
			p.dpi = yres * 2.54
		}
		pages = append(pages, p)
		off = bo.Uint32(data[end : end+4])
	}
	if len(pages) == 0 {
		return nil, errors.New("TIFF has no pages")
	}
	return pages, nil
}

// tiffPageReader presents a TIFF whose header points at one chosen IFD,
// so the single-page decoder of x/image/tiff reads that page. It shares
// the file's bytes instead of copying them.
type tiffPageReader struct {
	data []byte
	hdr  [8]byte
	pos  int64
}

func newTIFFPageReader(data []byte, ifd uint32) *tiffPageReader {
	r := &tiffPageReader{data: data}
	copy(r.hdr[:], data[:8])
	if data[0] == 'M' {
		binary.BigEndian.PutUint32(r.hdr[4:], ifd)
	} else {
		binary.LittleEndian.PutUint32(r.hdr[4:], ifd)
	}
	return r
}

// ReadAt implements io.ReaderAt.
func (r *tiffPageReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= int64(len(r.data)) {
		return 0, io.EOF
	}
	n := copy(p, r.data[off:])
	if off < 8 {
		copy(p, r.hdr[off:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Read implements io.Reader.
func (r *tiffPageReader) Read(p []byte) (int, error) {
	n, err := r.ReadAt(p, r.pos)
	r.pos += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}
