package ocr

import "encoding/binary"

// jpegMeta walks the marker segments of a JPEG up to the first scan and
// returns the EXIF orientation (1–8; 1 when absent or unreadable) and the
// JFIF vertical density in dots per inch (0 when absent or not in
// absolute units). It never fails: a damaged header just yields the
// defaults, and the full decode decides whether the file is usable.
func jpegMeta(data []byte) (orientation int, dpi float64) {
	orientation = 1
	if len(data) < 4 || data[0] != 0xFF || data[1] != 0xD8 {
		return orientation, 0
	}
	i := 2
	for i+4 <= len(data) {
		if data[i] != 0xFF {
			return orientation, dpi
		}
		marker := data[i+1]
		if marker == 0xFF { // fill byte
			i++
			continue
		}
		if marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7) || marker == 0x01 {
			i += 2
			continue
		}
		if marker == 0xDA || marker == 0xD9 { // start of scan, end of image
			return orientation, dpi
		}
		n := int(binary.BigEndian.Uint16(data[i+2 : i+4]))
		if n < 2 || i+2+n > len(data) {
			return orientation, dpi
		}
		seg := data[i+4 : i+2+n]
		switch {
		case marker == 0xE0 && len(seg) >= 12 && string(seg[:5]) == "JFIF\x00":
			unit, yd := seg[7], float64(binary.BigEndian.Uint16(seg[10:12]))
			switch unit {
			case 1:
				dpi = yd
			case 2:
				dpi = yd * 2.54
			}
		case marker == 0xE1 && len(seg) >= 6 && string(seg[:6]) == "Exif\x00\x00":
			if o := exifOrientation(seg[6:]); o != 0 {
				orientation = o
			}
		}
		i += 2 + n
	}
	return orientation, dpi
}

// exifOrientation reads tag 0x0112 (Orientation) from IFD0 of a TIFF
// structure (the payload of an EXIF APP1 segment). It returns 0 when the
// tag is absent, malformed or out of the range 1–8.
func exifOrientation(t []byte) int {
	if len(t) < 8 {
		return 0
	}
	var bo binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 0
	}
	if bo.Uint16(t[2:4]) != 42 {
		return 0
	}
	off := int64(bo.Uint32(t[4:8]))
	if off < 8 || off+2 > int64(len(t)) {
		return 0
	}
	n := int64(bo.Uint16(t[off : off+2]))
	for k := range n {
		e := off + 2 + k*12
		if e+12 > int64(len(t)) {
			return 0
		}
		if bo.Uint16(t[e:e+2]) != 0x0112 {
			continue
		}
		typ, count := bo.Uint16(t[e+2:e+4]), bo.Uint32(t[e+4:e+8])
		var v int
		switch {
		case typ == 3 && count >= 1: // SHORT, stored in the value field
			v = int(bo.Uint16(t[e+8 : e+10]))
		case typ == 4 && count >= 1: // LONG, seen from some writers
			v = int(bo.Uint32(t[e+8 : e+12]))
		default:
			return 0
		}
		if v < 1 || v > 8 {
			return 0
		}
		return v
	}
	return 0
}
