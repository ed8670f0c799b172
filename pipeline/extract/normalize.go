package extract

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// monthNames maps the first letters of English and Malay month names to
// the month number.
var monthNames = map[string]int{
	"jan": 1, "feb": 2, "mar": 3, "mac": 3, "apr": 4, "may": 5, "mei": 5,
	"jun": 6, "jul": 7, "aug": 8, "ogo": 8, "sep": 9, "oct": 10, "okt": 10,
	"nov": 11, "dec": 12, "dis": 12,
}

const monthRE = `(jan|feb|mar|mac|apr|may|mei|jun|jul|aug|ogos|sep|oct|okt|nov|dec|dis)[a-z]*\.?`

// Date patterns, tried in this order; each names its groups y, m, d (and
// mon for a month name).
var (
	dateYMD   = regexp.MustCompile(`\b(?P<y>(?:19|20)\d{2})\s?(?P<sep>[-/.])\s?(?P<m>\d{1,2})\s?[-/.]\s?(?P<d>\d{1,2})\b\.?`)
	dateKo    = regexp.MustCompile(`(?P<y>\d{2,4})\s*년\s*(?P<m>\d{1,2})\s*월\s*(?P<d>\d{1,2})\s*일`)
	dateDMY   = regexp.MustCompile(`\b(?P<a>\d{1,2})(?P<sep>[-/.])(?P<b>\d{1,2})[-/.](?P<y>\d{4}|\d{2})\b`)
	dateDMonY = regexp.MustCompile(`(?i)\b(?P<d>\d{1,2})(?:st|nd|rd|th)?[\s\-/.,]{0,3}\b` + `(?P<mon>` + monthRE + `)` + `[\s\-/.,]{0,3}(?P<y>\d{4}|\d{2})\b`)
	dateMonDY = regexp.MustCompile(`(?i)\b(?P<mon>` + monthRE + `)[\s\-/.]{0,3}(?P<d>\d{1,2})(?:st|nd|rd|th)?,?\s{0,3}(?P<y>\d{4})\b`)
)

// dateMatch is a date found in a text: its byte range and ISO value.
type dateMatch struct {
	start, end int
	iso        string
}

// ParseDate normalises a date written in one of the usual receipt formats
// to ISO 8601 (YYYY-MM-DD): 2018-12-25, 2018/12/25, 25/12/2018, 25-12-18,
// 25.12.2018, 12.25.2018 (month first only when the day cannot be a month),
// "25 Dec 2018", "25-DEC-18", "15/APR/2017", "Dec 25, 2018", Malay month
// names (MAC, MEI, OGOS, OKT, DIS), and Korean "2018년 12월 25일" or
// "2018. 12. 25.". Numeric dates are read day-first when ambiguous; two-digit
// years are 20xx below 70 and 19xx from 70. The first date in s is used;
// ok is false when s holds no valid date between 1970 and 2099.
func ParseDate(s string) (iso string, ok bool) {
	ms := findDates(s)
	if len(ms) == 0 {
		return "", false
	}
	return ms[0].iso, true
}

// findDates returns the valid dates in s, in text order, without overlaps.
func findDates(s string) []dateMatch {
	if len(s) > 4096 {
		s = s[:4096]
	}
	var out []dateMatch
	add := func(start, end int, y, m, d int) {
		if iso, ok := isoDate(y, m, d); ok {
			for _, o := range out {
				if start < o.end && o.start < end {
					return
				}
			}
			out = append(out, dateMatch{start, end, iso})
		}
	}
	for _, re := range []*regexp.Regexp{dateKo, dateYMD, dateDMonY, dateMonDY, dateDMY} {
		for _, idx := range re.FindAllStringSubmatchIndex(s, -1) {
			g := func(name string) string {
				i := re.SubexpIndex(name)
				if i < 0 || idx[2*i] < 0 {
					return ""
				}
				return s[idx[2*i]:idx[2*i+1]]
			}
			y := year(g("y"))
			switch re {
			case dateDMY:
				a, b := atoi(g("a")), atoi(g("b"))
				d, m := a, b
				if a <= 12 && b > 12 { // 12.25.2018: month first
					d, m = b, a
				}
				add(idx[0], idx[1], y, m, d)
			case dateDMonY, dateMonDY:
				mon := strings.ToLower(g("mon"))
				add(idx[0], idx[1], y, monthNames[mon[:3]], atoi(g("d")))
			default:
				add(idx[0], idx[1], y, atoi(g("m")), atoi(g("d")))
			}
		}
	}
	slices.SortFunc(out, func(a, b dateMatch) int { return a.start - b.start })
	return out
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

// year reads a 2- or 4-digit year.
func year(s string) int {
	y := atoi(s)
	switch {
	case y < 0:
		return -1
	case len(s) <= 2 && y < 70:
		return 2000 + y
	case len(s) <= 2:
		return 1900 + y
	}
	return y
}

// isoDate formats a calendar date, refusing impossible ones.
func isoDate(y, m, d int) (string, bool) {
	if y < 1970 || y > 2099 || m < 1 || m > 12 || d < 1 || d > 31 {
		return "", false
	}
	t := time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC)
	if t.Day() != d {
		return "", false
	}
	return t.Format(time.DateOnly), true
}

// Amounts: an optional currency before or after, a sign, and a number
// with thousands separators and/or decimals. The alternatives are ordered
// so that the most structured reading wins.
var amountRE = regexp.MustCompile(`(?i)(?P<neg>[-(]\s?)?(?P<cur>RM|MYR|USD|US\$|SGD|S\$|EUR|GBP|KRW|JPY|[$€£₩¥])?\s?(?P<neg2>-)?(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d{1,3})?|\d{1,3}(?:\.\d{3})+(?:,\d{1,2})?|\d{1,3}(?: \d{3})+(?:[.,]\d{2})|\d+(?:[.,]\d{1,3})?)(?P<cur2>\s?(?:원|won\b|krw\b|RM\b|€|\$))?\)?`)

// amountMatch is an amount found in a text.
type amountMatch struct {
	start, end int
	value      string // normalised, e.g. "1234.50"
	currency   string // ISO 4217 code, "" when none was written
	decimals   bool   // the number had a fractional part
}

// ParseAmount normalises a money amount to a plain decimal string:
// "RM 1,234.50" → "1234.50", "$8.6" → "8.60", "1.234,50 €" → "1234.50",
// "₩12,000" and "12,000원" → "12000", "(5.00)" → "-5.00". A single comma
// followed by exactly three digits is a thousands separator, a single dot a
// decimal point. Amounts with a fractional part keep at least two decimals.
// ok is false when s holds no amount.
func ParseAmount(s string) (value string, ok bool) {
	ms := findAmounts(s)
	if len(ms) == 0 {
		return "", false
	}
	return ms[0].value, true
}

// findAmounts returns the amounts in s in text order.
func findAmounts(s string) []amountMatch {
	if len(s) > 4096 {
		s = s[:4096]
	}
	var out []amountMatch
	for _, idx := range amountRE.FindAllStringSubmatchIndex(s, -1) {
		g := func(name string) string {
			i := amountRE.SubexpIndex(name)
			if idx[2*i] < 0 {
				return ""
			}
			return s[idx[2*i]:idx[2*i+1]]
		}
		num := g("num")
		// Refuse digits glued to letters or to more digits (ids, dates,
		// times, phone numbers, rates): the match must stand alone.
		start, end := idx[0], idx[1]
		for start < end && s[start] == ' ' {
			start++
		}
		for end > start && s[end-1] == ' ' {
			end--
		}
		if gluedBefore(s, start) || gluedAfter(s, end) {
			continue
		}
		idx[0], idx[1] = start, end
		value, decimals, ok := normaliseNumber(num)
		if !ok {
			continue
		}
		neg := g("neg") != "" && !strings.HasPrefix(g("neg"), "(") || g("neg2") != "" ||
			strings.HasPrefix(g("neg"), "(") && strings.HasSuffix(s[idx[0]:idx[1]], ")")
		if neg && strings.Trim(value, "0.") != "" {
			value = "-" + value
		}
		cur := currencyCode(g("cur"))
		if cur == "" {
			cur = currencyCode(strings.TrimSpace(g("cur2")))
		}
		out = append(out, amountMatch{start: idx[0], end: idx[1], value: value, currency: cur, decimals: decimals})
	}
	return out
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// gluedBefore reports whether the token starting at s[i] continues a
// bigger token: a letter or digit before it, or a separator that follows
// a digit ("10:51", "10-04", "1/2").
func gluedBefore(s string, i int) bool {
	if i == 0 {
		return false
	}
	c := s[i-1]
	if isAlnum(c) {
		return true
	}
	return strings.IndexByte("/-.,:", c) >= 0 && i >= 2 && isDigit(s[i-2])
}

// gluedAfter reports whether the token ending before s[i] goes on: a
// letter, digit or percent sign after it, or a separator followed by a digit.
func gluedAfter(s string, i int) bool {
	if i >= len(s) {
		return false
	}
	c := s[i]
	if isAlnum(c) || c == '%' {
		return true
	}
	return strings.IndexByte("/-.,:", c) >= 0 && i+1 < len(s) && isDigit(s[i+1])
}

// normaliseNumber turns a matched number into a plain decimal.
func normaliseNumber(num string) (value string, decimals bool, ok bool) {
	num = strings.ReplaceAll(num, " ", "")
	intPart, frac := num, ""
	lastDot, lastComma := strings.LastIndexByte(num, '.'), strings.LastIndexByte(num, ',')
	switch {
	case lastDot >= 0 && lastComma >= 0: // both: the last one is the decimal point
		if lastDot > lastComma {
			intPart, frac = num[:lastDot], num[lastDot+1:]
		} else {
			intPart, frac = num[:lastComma], num[lastComma+1:]
		}
	case lastComma >= 0:
		if strings.Count(num, ",") == 1 && len(num)-lastComma-1 != 3 {
			intPart, frac = num[:lastComma], num[lastComma+1:]
		}
	case lastDot >= 0:
		if strings.Count(num, ".") == 1 {
			intPart, frac = num[:lastDot], num[lastDot+1:]
		}
	}
	intPart = strings.NewReplacer(",", "", ".", "").Replace(intPart)
	intPart = strings.TrimLeft(intPart, "0")
	if intPart == "" {
		intPart = "0"
	}
	for _, c := range intPart + frac {
		if c < '0' || c > '9' {
			return "", false, false
		}
	}
	if len(intPart) > 15 {
		return "", false, false
	}
	if frac == "" {
		return intPart, false, true
	}
	for len(frac) < 2 {
		frac += "0"
	}
	return intPart + "." + frac, true, true
}

// currencyCode maps a written currency to its ISO 4217 code ("" when
// unknown). A bare "$" is read as USD.
func currencyCode(s string) string {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "RM", "MYR":
		return "MYR"
	case "$", "USD", "US$":
		return "USD"
	case "S$", "SGD":
		return "SGD"
	case "€", "EUR":
		return "EUR"
	case "£", "GBP":
		return "GBP"
	case "₩", "원", "KRW", "WON":
		return "KRW"
	case "¥", "JPY":
		return "JPY"
	}
	return ""
}

// currencyRE finds currency marks anywhere in a text.
var currencyRE = regexp.MustCompile(`(?i)\b(RM|MYR|USD|SGD|EUR|GBP|KRW|JPY)(\b|\d)|US\$|S\$|[$€£₩¥]|\d\s?원`)

// findCurrencies returns the currency codes written in s with their byte ranges.
func findCurrencies(s string) []amountMatch {
	var out []amountMatch
	for _, idx := range currencyRE.FindAllStringIndex(s, -1) {
		tok := s[idx[0]:idx[1]]
		if c := tok[len(tok)-1]; isDigit(c) && !strings.HasSuffix(tok, "원") { // "RM105.98"
			tok, idx[1] = tok[:len(tok)-1], idx[1]-1
		}
		if strings.HasSuffix(tok, "원") {
			tok, idx[0] = "원", idx[1]-len("원")
		}
		if c := currencyCode(tok); c != "" {
			out = append(out, amountMatch{start: idx[0], end: idx[1], currency: c, value: tok})
		}
	}
	return out
}
