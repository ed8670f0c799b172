package layout

import (
	"strconv"
	"strings"
)

// ParseNumber reads s as a number the way it is printed on invoices and
// receipts: "1,234.50", "1.234,50", "12.5", "-3", "(4.00)", "4.00-",
// "$12.00", "12,00 €". It reports false for anything else, including dates,
// times, percentages and digit strings with a leading zero ("007", an
// identifier more than a number).
//
// With both separators present the last one is the decimal point. A lone
// comma followed by exactly three digits groups thousands ("1,234" is
// 1234); otherwise a single comma is a decimal point ("1,5" is 1.5). A
// single dot is always a decimal point; several dots group thousands.
func ParseNumber(s string) (float64, bool) {
	s = strings.TrimSpace(s)
	neg := false
	if strings.HasPrefix(s, "(") && strings.HasSuffix(s, ")") {
		neg, s = true, strings.TrimSpace(s[1:len(s)-1])
	}
	sign := func() {
		switch {
		case strings.HasPrefix(s, "-"), strings.HasPrefix(s, "−"):
			neg = !neg
			s = strings.TrimPrefix(strings.TrimPrefix(s, "-"), "−")
		case strings.HasPrefix(s, "+"):
			s = s[1:]
		case strings.HasSuffix(s, "-"):
			neg = !neg
			s = s[:len(s)-1]
		}
		s = strings.TrimSpace(s)
	}
	sign()
	for _, sym := range []string{"$", "€", "£", "¥", "₹"} {
		if t, ok := strings.CutPrefix(s, sym); ok {
			s = strings.TrimSpace(t)
			break
		}
		if t, ok := strings.CutSuffix(s, sym); ok {
			s = strings.TrimSpace(t)
			break
		}
	}
	if !neg {
		sign()
	}
	if s == "" || strings.TrimLeft(s, "0123456789.,") != "" || !strings.ContainsAny(s, "0123456789") {
		return 0, false
	}
	dot, comma := strings.LastIndexByte(s, '.'), strings.LastIndexByte(s, ',')
	var intPart, frac string
	switch {
	case dot >= 0 && comma >= 0:
		d, g := byte('.'), ","
		if comma > dot {
			d, g = ',', "."
		}
		i := strings.LastIndexByte(s, d)
		intPart, frac = s[:i], s[i+1:]
		if strings.ContainsRune(frac, rune(g[0])) || strings.ContainsRune(intPart, rune(d)) {
			return 0, false
		}
		if !groupsOK(intPart, g) {
			return 0, false
		}
		intPart = strings.ReplaceAll(intPart, g, "")
	case comma >= 0:
		if strings.Count(s, ",") > 1 || len(s)-comma-1 == 3 && comma > 0 && comma <= 3 && s[0] != '0' {
			if !groupsOK(s, ",") {
				return 0, false
			}
			intPart = strings.ReplaceAll(s, ",", "")
		} else {
			intPart, frac = s[:comma], s[comma+1:]
		}
	case dot >= 0:
		if strings.Count(s, ".") > 1 {
			if !groupsOK(s, ".") {
				return 0, false
			}
			intPart = strings.ReplaceAll(s, ".", "")
		} else {
			intPart, frac = s[:dot], s[dot+1:]
		}
	default:
		intPart = s
	}
	if len(intPart) > 1 && intPart[0] == '0' {
		return 0, false
	}
	if intPart == "" && frac == "" || strings.Contains(frac, ",") || strings.Contains(frac, ".") {
		return 0, false
	}
	num := intPart
	if num == "" {
		num = "0"
	}
	if frac != "" {
		num += "." + frac
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, false
	}
	if neg {
		v = -v
	}
	return v, true
}

// groupsOK reports whether s is digits in thousands groups separated by
// sep: 1–3 digits, then groups of exactly 3.
func groupsOK(s, sep string) bool {
	parts := strings.Split(s, sep)
	if len(parts[0]) == 0 || len(parts[0]) > 3 {
		return len(parts) == 1 && len(parts[0]) > 0
	}
	for _, p := range parts[1:] {
		if len(p) != 3 {
			return false
		}
	}
	return true
}
