package ocr

import (
	"bytes"
	"encoding/binary"
	"image"
	"image/jpeg"
	"io"
	"testing"
)

func TestJPEGMeta(t *testing.T) {
	var jpg bytes.Buffer
	if err := jpeg.Encode(&jpg, image.NewGray(image.Rect(0, 0, 8, 8)), nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		data    []byte
		wantO   int
		wantDPI float64
	}{
		{"plain", jpg.Bytes(), 1, 0},
		{"orientation 6 II", withEXIFOrientation(jpg.Bytes(), 6, binary.LittleEndian), 6, 0},
		{"orientation 8 MM", withEXIFOrientation(jpg.Bytes(), 8, binary.BigEndian), 8, 0},
		{"orientation 3", withEXIFOrientation(jpg.Bytes(), 3, binary.LittleEndian), 3, 0},
		{"orientation 0 invalid", withEXIFOrientation(jpg.Bytes(), 0, binary.LittleEndian), 1, 0},
		{"orientation 9 invalid", withEXIFOrientation(jpg.Bytes(), 9, binary.LittleEndian), 1, 0},
		{"JFIF 300 dpi", jfif(jpg.Bytes(), 1, 300), 1, 300},
		{"JFIF 100 dots/cm", jfif(jpg.Bytes(), 2, 100), 1, 254},
		{"JFIF aspect only", jfif(jpg.Bytes(), 0, 1), 1, 0},
		{"truncated segment", withEXIFOrientation(jpg.Bytes(), 6, binary.LittleEndian)[:20], 1, 0},
		{"not a JPEG", []byte("hello"), 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, dpi := jpegMeta(tt.data)
			if o != tt.wantO || dpi != tt.wantDPI {
				t.Errorf("jpegMeta = %d, %v; want %d, %v", o, dpi, tt.wantO, tt.wantDPI)
			}
		})
	}
}

// jfif inserts a JFIF APP0 segment with the given density unit and value.
func jfif(jpg []byte, unit byte, d uint16) []byte {
	seg := []byte{0xFF, 0xE0, 0, 16, 'J', 'F', 'I', 'F', 0, 1, 2, unit}
	seg = binary.BigEndian.AppendUint16(seg, d)
	seg = binary.BigEndian.AppendUint16(seg, d)
	seg = append(seg, 0, 0)
	return append(append(append([]byte{}, jpg[:2]...), seg...), jpg[2:]...)
}

func TestOrient(t *testing.T) {
	// 3×2 source, pixels numbered in reading order:
	//   1 2 3
	//   4 5 6
	src := raster{w: 3, h: 2, ch: 1, pix: []byte{1, 2, 3, 4, 5, 6}}
	tests := []struct {
		o    int
		w, h int
		want []byte
	}{
		{1, 3, 2, []byte{1, 2, 3, 4, 5, 6}},
		{2, 3, 2, []byte{3, 2, 1, 6, 5, 4}},
		{3, 3, 2, []byte{6, 5, 4, 3, 2, 1}},
		{4, 3, 2, []byte{4, 5, 6, 1, 2, 3}},
		{5, 2, 3, []byte{1, 4, 2, 5, 3, 6}},
		{6, 2, 3, []byte{4, 1, 5, 2, 6, 3}},
		{7, 2, 3, []byte{6, 3, 5, 2, 4, 1}},
		{8, 2, 3, []byte{3, 6, 2, 5, 1, 4}},
	}
	for _, tt := range tests {
		got := orient(src, tt.o)
		if got.w != tt.w || got.h != tt.h || !bytes.Equal(got.pix, tt.want) {
			t.Errorf("orient %d = %dx%d %v, want %dx%d %v", tt.o, got.w, got.h, got.pix, tt.w, tt.h, tt.want)
		}
	}
}

func FuzzJPEGMeta(f *testing.F) {
	var jpg bytes.Buffer
	if err := jpeg.Encode(&jpg, image.NewGray(image.Rect(0, 0, 4, 4)), nil); err != nil {
		f.Fatal(err)
	}
	f.Add(jpg.Bytes())
	f.Add(withEXIFOrientation(jpg.Bytes(), 6, binary.LittleEndian))
	f.Add(withEXIFOrientation(jpg.Bytes(), 8, binary.BigEndian))
	f.Add(jfif(jpg.Bytes(), 1, 300))
	f.Add([]byte{0xFF, 0xD8, 0xFF, 0xE1, 0, 8, 'E', 'x', 'i', 'f', 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		o, dpi := jpegMeta(data)
		if o < 1 || o > 8 || dpi < 0 {
			t.Fatalf("jpegMeta = %d, %v", o, dpi)
		}
		if len(data) > 6 {
			if o := exifOrientation(data[6:]); o < 0 || o > 8 {
				t.Fatalf("exifOrientation = %d", o)
			}
		}
		r := orient(raster{w: 2, h: 3, ch: 1, pix: make([]byte, 6)}, o)
		if r.w*r.h != 6 {
			t.Fatalf("orient changed the pixel count: %dx%d", r.w, r.h)
		}
	})
}

// FuzzInput runs everything that reads untrusted bytes before Tesseract:
// sniffing, header checks, TIFF page walking, DPI parsing and decoding,
// with a small pixel limit. None of it may panic or let an oversized page
// through.
func FuzzInput(f *testing.F) {
	page := image.NewGray(image.Rect(0, 0, 6, 4))
	var jpg bytes.Buffer
	if err := jpeg.Encode(&jpg, page, nil); err != nil {
		f.Fatal(err)
	}
	f.Add(pngBytes(f, page))
	f.Add(jpg.Bytes())
	f.Add(multiPageTIFF([]*image.Gray{page, page}, 300))
	f.Add([]byte("BM\x00\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00\x01\x00\x18\x00"))
	f.Add([]byte("RIFF\x00\x00\x00\x00WEBPVP8L"))
	f.Add([]byte("GIF89a\x01\x00\x01\x00"))
	f.Add([]byte("%PDF-1.4\n"))
	f.Add([]byte("P5\n3 2\n255\n\x01\x02\x03\x04\x05\x06"))
	f.Add([]byte("plain text\n"))
	const maxPixels = 1 << 16
	f.Fuzz(func(t *testing.T, data []byte) {
		if w, h, _, _, err := pnmDims(data); err == nil && w >= 0 && h >= 0 {
			if r, err := rasterFromPNM(data, maxPixels); err == nil && r.w*r.h > maxPixels {
				t.Fatalf("PNM %dx%d over the limit", r.w, r.h)
			}
		}
		fmt, err := sniff(data)
		if err != nil {
			return
		}
		_ = pngDPI(data)
		_ = bmpDPI(data)
		check := func(r raster, err error) {
			if err == nil && (r.w*r.h > maxPixels || len(r.pix) != r.w*r.h*r.ch) {
				t.Fatalf("%s: raster %dx%dx%d with %d bytes", fmt, r.w, r.h, r.ch, len(r.pix))
			}
		}
		switch fmt {
		case formatPDF:
			return
		case formatTIFF:
			pages, err := tiffPages(data, 4)
			if err != nil {
				return
			}
			for _, p := range pages {
				check(decodeImage(fmt, func() io.Reader { return newTIFFPageReader(data, p.offset) }, maxPixels))
			}
		default:
			check(decodeImage(fmt, func() io.Reader { return bytes.NewReader(data) }, maxPixels))
		}
	})
}

func TestDeclaredDPI(t *testing.T) {
	page := image.NewGray(image.Rect(0, 0, 4, 4))
	// A PNG with a pHYs chunk of 11811 px/m (300 dpi) before IDAT.
	plain := pngBytes(t, page)
	phys := []byte{0, 0, 0, 9, 'p', 'H', 'Y', 's', 0, 0, 0x2e, 0x23, 0, 0, 0x2e, 0x23, 1, 0, 0, 0, 0}
	withPHYs := append(append(append([]byte{}, plain[:33]...), phys...), plain[33:]...)
	bmpHdr := make([]byte, 54)
	copy(bmpHdr, "BM")
	binary.LittleEndian.PutUint32(bmpHdr[14:], 40)
	binary.LittleEndian.PutUint32(bmpHdr[42:], 7874) // 200 dpi
	c := newClient(t, Options{DPI: 250})
	tests := []struct {
		name string
		got  float64
		want float64
	}{
		{"PNG without pHYs", pngDPI(plain), 0},
		{"PNG with pHYs", pngDPI(withPHYs), 11811 * 0.0254},
		{"BMP", bmpDPI(bmpHdr), 7874 * 0.0254},
		{"TIFF", func() float64 {
			p, err := tiffPages(multiPageTIFF([]*image.Gray{page}, 400), 1)
			if err != nil {
				t.Fatal(err)
			}
			return p[0].dpi
		}(), 400},
		{"effective: none declared", float64(c.effectiveDPI(0)), 250},
		{"effective: placeholder 72", float64(c.effectiveDPI(72)), 250},
		{"effective: placeholder 96", float64(c.effectiveDPI(96)), 250},
		{"effective: declared 300", float64(c.effectiveDPI(299.9994)), 300},
		{"effective: absurd", float64(c.effectiveDPI(9000)), 250},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}
