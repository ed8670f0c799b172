package ocr

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"strconv"
)

// raster is a decoded page as 8-bit grey samples (ch is 1; the field
// stays so orient and pnm would take colour too), rows packed without
// padding, transparency laid over white. It is what Tesseract is handed,
// re-encoded as PGM.
//
// Pages go to Tesseract in grey because it binarises them anyway: a
// colour page costs it three times the thresholding work and four times
// the memory (a 35-megapixel A4 scan is 140 MB as a 32-bit Pix), and the
// JPEG luma plane needs no conversion at all.
type raster struct {
	w, h, ch int
	pix      []byte
}

// toRaster converts a decoded image to a grey raster. Common decoder
// outputs take fast paths; anything else goes through color.Color.
func toRaster(img image.Image) raster {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	r := raster{w: w, h: h, ch: 1, pix: make([]byte, w*h)}
	switch m := img.(type) {
	case *image.Gray:
		for y := range h {
			i := m.PixOffset(b.Min.X, b.Min.Y+y)
			copy(r.pix[y*w:(y+1)*w], m.Pix[i:i+w])
		}
		return r
	case *image.YCbCr: // JPEG: the luma plane is the grey image
		for y := range h {
			i := m.YOffset(b.Min.X, b.Min.Y+y)
			copy(r.pix[y*w:(y+1)*w], m.Y[i:i+w])
		}
		return r
	case *image.NRGBA:
		for y := range h {
			row := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			for x := range w {
				p := row[x*4 : x*4+4]
				a := uint32(p[3])
				l := luma(uint32(p[0]), uint32(p[1]), uint32(p[2]))
				r.pix[y*w+x] = uint8((l*a + 255*(255-a) + 127) / 255)
			}
		}
		return r
	case *image.RGBA:
		for y := range h {
			row := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			for x := range w {
				p := row[x*4 : x*4+4]
				// premultiplied: over white adds the missing coverage
				r.pix[y*w+x] = uint8(luma(uint32(p[0]), uint32(p[1]), uint32(p[2])) + uint32(255-p[3]))
			}
		}
		return r
	case *image.Paletted:
		var lut [256]byte
		for i := range lut {
			c := color.Color(color.Black)
			if i < len(m.Palette) {
				c = m.Palette[i]
			}
			lut[i] = overWhite(c)
		}
		for y := range h {
			row := m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):]
			for x := range w {
				r.pix[y*w+x] = lut[row[x]]
			}
		}
		return r
	}
	o := 0
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r.pix[o] = overWhite(img.At(x, y))
			o++
		}
	}
	return r
}

// luma is the Rec. 601 luma of 8-bit RGB, as JPEG's Y (0–255).
func luma(r, g, b uint32) uint32 {
	return (19595*r + 38470*g + 7471*b + 1<<15) >> 16
}

// overWhite is the grey of c composited over an opaque white background.
func overWhite(c color.Color) uint8 {
	r, g, b, a := c.RGBA() // premultiplied, 16 bit
	return uint8(luma((r+0xffff-a)>>8, (g+0xffff-a)>>8, (b+0xffff-a)>>8))
}

// orient returns r turned upright according to an EXIF orientation
// (1–8); 1 and unknown values return r unchanged. Orientations 5–8 swap
// width and height.
func orient(r raster, o int) raster {
	if o < 2 || o > 8 {
		return r
	}
	W, H, ch := r.w, r.h, r.ch
	out := raster{w: W, h: H, ch: ch, pix: make([]byte, len(r.pix))}
	if o >= 5 {
		out.w, out.h = H, W
	}
	for y := range H {
		for x := range W {
			var dx, dy int
			switch o {
			case 2:
				dx, dy = W-1-x, y
			case 3:
				dx, dy = W-1-x, H-1-y
			case 4:
				dx, dy = x, H-1-y
			case 5:
				dx, dy = y, x
			case 6:
				dx, dy = H-1-y, x
			case 7:
				dx, dy = H-1-y, W-1-x
			case 8:
				dx, dy = y, W-1-x
			}
			s, d := (y*W+x)*ch, (dy*out.w+dx)*ch
			copy(out.pix[d:d+ch], r.pix[s:s+ch])
		}
	}
	return out
}

// pnm encodes r as binary PGM (P5) or PPM (P6). Leptonica reads it
// without any decompression, so it is the cheapest clean hand-over.
func (r raster) pnm() []byte {
	magic := "P6"
	if r.ch == 1 {
		magic = "P5"
	}
	hdr := fmt.Sprintf("%s\n%d %d\n255\n", magic, r.w, r.h)
	out := make([]byte, 0, len(hdr)+len(r.pix))
	return append(append(out, hdr...), r.pix...)
}

// pnmDims parses the header of a binary PGM/PPM (maxval 255) as
// pdftoppm writes it, returning the dimensions, samples per pixel and
// where the pixels begin.
func pnmDims(data []byte) (w, h, ch, off int, err error) {
	if len(data) < 2 || data[0] != 'P' || (data[1] != '5' && data[1] != '6') {
		return 0, 0, 0, 0, errors.New("not a binary PGM/PPM")
	}
	ch = 1
	if data[1] == '6' {
		ch = 3
	}
	i := 2
	var vals [3]int
	for n := range vals {
		for i < len(data) && (data[i] == ' ' || data[i] == '\n' || data[i] == '\r' || data[i] == '\t' || data[i] == '#') {
			if data[i] == '#' {
				for i < len(data) && data[i] != '\n' {
					i++
				}
				continue
			}
			i++
		}
		j := i
		for j < len(data) && data[j] >= '0' && data[j] <= '9' && j-i < 9 {
			j++
		}
		v, perr := strconv.Atoi(string(data[i:j]))
		if perr != nil {
			return 0, 0, 0, 0, fmt.Errorf("bad PNM header: %w", perr)
		}
		vals[n] = v
		i = j
	}
	if i >= len(data) || vals[2] != 255 {
		return 0, 0, 0, 0, errors.New("bad PNM header: want maxval 255")
	}
	return vals[0], vals[1], ch, i + 1, nil
}

// rasterFromPNM decodes a binary PGM/PPM written by pdftoppm, refusing
// pages over maxPixels by header.
func rasterFromPNM(data []byte, maxPixels int) (raster, error) {
	w, h, ch, off, err := pnmDims(data)
	if err != nil {
		return raster{}, err
	}
	if err := checkDims(w, h, maxPixels); err != nil {
		return raster{}, err
	}
	if len(data)-off < w*h*ch {
		return raster{}, fmt.Errorf("PNM truncated: %d of %d bytes", len(data)-off, w*h*ch)
	}
	return raster{w: w, h: h, ch: ch, pix: bytes.Clone(data[off : off+w*h*ch])}, nil
}
