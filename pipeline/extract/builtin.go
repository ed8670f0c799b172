package extract

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"unicode"
)

// Builtin is the offline, rule-based extractor for receipts and invoices.
// It knows the rules company, address, date, total, currency,
// invoice_number and tax (see Schema) and fills other schema fields from
// labelled pairs whose key matches the field's labels. Its zero value is
// ready to use and safe for concurrent use.
type Builtin struct{}

// Extract implements Extractor. It never fails except when ctx is done.
func (Builtin) Extract(ctx context.Context, doc *Document) (*Fields, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("builtin extract: %w", err)
	}
	schema := doc.Schema
	if schema == nil {
		schema = DefaultSchema()
	}
	out := &Fields{Fields: make(map[string]Field), Pairs: findPairs(doc)}
	company := -1
	for _, sf := range schema.Fields {
		var f Field
		switch sf.Rule {
		case RuleCompany:
			f, company = findCompany(doc)
		case RuleAddress:
			if company < 0 {
				_, company = findCompany(doc)
			}
			f = findAddress(doc, company)
		case RuleDate:
			f = findDate(doc)
		case RuleTotal:
			f, _ = findTotal(doc)
		case RuleCurrency:
			f = findCurrency(doc)
		case RuleInvoiceNumber:
			f = findInvoiceNumber(doc)
		case RuleTax:
			f = findTax(doc)
		default:
			f = fromPairs(out.Pairs, sf.Labels)
		}
		if f.Value != "" {
			// Re-normalise to the field's declared type (a schema may map a
			// rule to another type, or restrict it with an enum).
			if v, ok := sf.normalise(f.Value); ok {
				f.Value = v
			} else {
				f = Field{}
			}
		}
		out.Fields[sf.Name] = f
	}
	out.complete(schema)
	return out, nil
}

// lower returns the lower-cased text of a line.
func lower(l *Line) string { return strings.ToLower(l.Text) }

// letters counts the letters of s.
func letters(s string) (n int) {
	for _, r := range s {
		if unicode.IsLetter(r) {
			n++
		}
	}
	return n
}

var (
	companySuffixRE = regexp.MustCompile(`(?i)\b(sdn\.?\s*bhd|bhd|s/b|enterprise|trading|ltd|limited|inc|llc|corp(oration)?|company|co\.|gmbh|plc|hardware|restoran|restaurant|mart|store|shop|bakery|bakeries|station|florist|stationery|pharmacy|supermarket|cafe|kedai|berhad)\b|주식회사|\(주\)|상사|상회`)
	headerRE        = regexp.MustCompile(`(?i)^\W*(tax\s+invoice|invoice|receipt|official\s+receipt|cash\s+(sale|bill|receipt)|bill|simplified|copy|welcome|tax|duplicate|original|order|quotation|delivery\s+order)\W*$|영수증|계산서`)
	regNoRE         = regexp.MustCompile(`(?i)\(\s*[0-9a-z]{3,}-[a-z0-9]\s*\)|\(\s*\d{5,}\s*[a-z]?\s*\)|\b(co\.?\s*(reg|no)|company\s*(reg|no)|roc|reg\.?\s*no|gst\s*(reg|id|no)|sst\s*(reg|id|no)|business\s*reg|사업자)\b`)
	stopRE          = regexp.MustCompile(`(?i)\b(tel|phone|ph|fax|hp|h/p|mobile|email|e-mail|www|http|gst|sst|vat|invoice|receipt|date|cashier|counter|table|time|branch)\b|전화|tel\.|@`)
	strongAddrRE    = regexp.MustCompile(`(?i)^\W*\d|\b\d{5}\b|\b(jalan|jln|lot|lorong|taman|tmn|street|road|floor)\b`)
	addressRE       = regexp.MustCompile(`(?i)\bno\.?\s*\d|\b(jalan|jln|lot|lorong|taman|tmn|persiaran|bandar|kawasan|street|st|road|rd|avenue|ave|floor|flr|level|lvl|blok|block|bldg|building|bangunan|plaza|mall|kampung|kg|seksyen|section|batu|simpang|off|sg|sungai|pusat|kompleks|complex|industrial|perindustrian|selangor|johor|bahru|kuala|lumpur|penang|pinang|perak|kedah|melaka|malacca|pahang|sabah|sarawak|negeri|sembilan|terengganu|kelantan|perlis|putrajaya|labuan|malaysia|singapore|kajang|klang|petaling|jaya|shah|alam|cheras|kepong|puchong|subang|ampang|ipoh|masai|d\.?e\.?)\b|\b\d{5}\b|[가-힣]+(시|구|동|로|길|읍|면)(\s|\d|$)`)
)

// topLines is how many leading lines may hold the vendor's name.
const topLines = 10

// findCompany picks the vendor's name among the first lines: the first
// line with a company suffix (SDN BHD, LTD, TRADING, 주식회사, ...), else the
// first line that reads like a name. It returns the line index (-1).
func findCompany(doc *Document) (Field, int) {
	first := -1
	for i := 0; i < len(doc.Lines) && i < topLines; i++ {
		l := &doc.Lines[i]
		text := cleanEnds(strings.TrimSpace(regNoBracketRE.ReplaceAllString(l.Text, "")))
		if letters(text) < 3 || float64(letters(text)) < 0.6*float64(len([]rune(strings.ReplaceAll(text, " ", "")))) {
			continue
		}
		if stopRE.MatchString(text) && first >= 0 {
			break // past the header block: a later "SDN BHD" line is someone else (a customer)
		}
		if headerRE.MatchString(text) || regNoRE.MatchString(text) || stopRE.MatchString(text) {
			continue
		}
		ids, conf := l.all()
		if conf < 0.5 {
			continue
		}
		if companySuffixRE.MatchString(text) {
			return Field{Value: text, Raw: l.Text, Confidence: conf * 0.9, BoxIDs: ids}, i
		}
		if first < 0 && !strongAddrRE.MatchString(text) {
			first = i
		}
	}
	if first < 0 {
		return Field{}, -1
	}
	l := &doc.Lines[first]
	ids, conf := l.all()
	return Field{Value: cleanEnds(strings.TrimSpace(regNoBracketRE.ReplaceAllString(l.Text, ""))), Raw: l.Text, Confidence: conf * 0.6, BoxIDs: ids}, first
}

// regNoBracketRE is a company registration number in brackets: "(867388-U)", "(139386 X)".
var regNoBracketRE = regexp.MustCompile(`(?i)\(\s*[0-9]{3,}[\s-]*[a-z]?\s*\)`)

// cleanEnds drops leading and trailing one-character noise tokens and
// punctuation that OCR adds around a line.
func cleanEnds(s string) string {
	f := strings.Fields(s)
	noise := func(w string) bool {
		return letters(w) == 0 && !strings.ContainsAny(w, "0123456789") || len([]rune(w)) == 1 && !unicode.IsLetter([]rune(w)[0]) && !unicode.IsDigit([]rune(w)[0])
	}
	for len(f) > 0 && noise(f[0]) {
		f = f[1:]
	}
	for len(f) > 0 && noise(f[len(f)-1]) {
		f = f[:len(f)-1]
	}
	return strings.Trim(strings.Join(f, " "), " ;|_~")
}

// findAddress takes the lines after the vendor's name that read like an
// address, up to the first phone/tax/date line.
func findAddress(doc *Document, company int) Field {
	start := company + 1
	if company < 0 {
		start = 0
	}
	var parts []string
	var ids []int64
	var conf float64
	n := 0
	for i := start; i < len(doc.Lines) && i < start+topLines; i++ {
		l := &doc.Lines[i]
		text := cleanEnds(strings.TrimSpace(regNoBracketRE.ReplaceAllString(l.Text, "")))
		if text == "" {
			continue
		}
		isAddr := addressRE.MatchString(text)
		stop := stopRE.MatchString(text) || headerRE.MatchString(text) || regNoRE.MatchString(text) && !strongAddrRE.MatchString(text)
		if n == 0 {
			if stop || !isAddr {
				if stop && i > start+3 {
					break
				}
				continue
			}
		} else {
			nextAddr := i+1 < len(doc.Lines) && addressRE.MatchString(doc.Lines[i+1].Text)
			cont := isAddr || strings.HasSuffix(parts[n-1], ",") || nextAddr
			if stop || !cont || n >= 6 || letters(text) < 3 {
				break
			}
		}
		parts = append(parts, text)
		lids, c := l.all()
		ids = append(ids, lids...)
		conf += c
		n++
	}
	if n == 0 {
		return Field{}
	}
	joined := make([]string, len(parts))
	for i, p := range parts {
		joined[i] = strings.TrimRight(p, ", ")
	}
	return Field{Value: strings.Join(joined, ", "), Raw: strings.Join(parts, "\n"), Confidence: conf / float64(n) * 0.7, BoxIDs: ids}
}

var (
	dateLabelRE    = regexp.MustCompile(`(?i)\b(date|dated|tarikh|tgl|datum|fecha)\b|날짜|일자|일시`)
	dateBadLabelRE = regexp.MustCompile(`(?i)\b(due|expiry|exp|valid|until|birth|print(ed)?)\b|유효`)
)

// findDate picks the document's date: a labelled one ("Date:", "Tarikh",
// "날짜") first, else the first date in the text.
func findDate(doc *Document) Field {
	var best Field
	bestScore := -1.0
	for i := range doc.Lines {
		l := &doc.Lines[i]
		for _, m := range findDates(l.Text) {
			score := 1.0
			if dateLabelRE.MatchString(l.Text) {
				score = 2
			}
			if dateBadLabelRE.MatchString(l.Text) {
				score = 0.5
			}
			if score > bestScore {
				ids, conf := l.span(m.start, m.end)
				best = Field{Value: m.iso, Raw: l.Text[m.start:m.end], Confidence: conf * (0.6 + 0.15*score), BoxIDs: ids}
				bestScore = score
			}
		}
	}
	return best
}

var (
	totalRE       = regexp.MustCompile(`(?i)\b(grand\s*total|final\s*total|total|jumlah|amount\s+due|balance\s+due|amount\s+payable|nett?\s+(amt|amount)|payable)\b|합\s*계|총\s*액|총\s*금\s*액|결제\s*금액|받을\s*금액|청구\s*금액`)
	grandRE       = regexp.MustCompile(`(?i)\b(grand|final)\s*total\b|\b(total|jumlah)\s*(amount|amt|payable|due|rm|\(rm\)|sales\s*\(?incl|incl|inclusive|termasuk)|\bnett?\s*total\b|\bamount\s+(due|payable)\b|총\s*액|결제\s*금액|받을\s*금액|청구\s*금액`)
	totalExclRE   = regexp.MustCompile(`(?i)sub[\s-]*total|\b(sub|tax|gst|sst|vat|excl|exclusive|excluding|before|round|rounding|rounded|adj|disc|discount|qty|quantity|items?|pcs|cash|change|tender(ed)?|saving|savings|point|points|service|svc|deposit|weight|vol|kg|unit)\b|공급가|부가세|세액|거스름|받은`)
	totalLabelOnl = regexp.MustCompile(`(?i)^[\W\s]*((grand|nett?)\s*)?(total|jumlah)(\s*(amount|amt|payable|due|rm|\(rm\)|incl\.?\s*gst|\(incl\.?\s*gst\)))*[\W\s]*(rm|myr|\$|usd|eur|€|£)?[\W\s]*$`)
	payLineRE     = regexp.MustCompile(`(?i)\b(cash|visa|master|credit|debit|card|paid|payment|tender(ed)?)\b`)
)

// findTotal finds the grand total: the amount on the best "total" line
// (GRAND TOTAL, TOTAL AMOUNT, NETT TOTAL, AMOUNT DUE, 합계 ... rank above a
// bare TOTAL; later lines win ties), skipping subtotal, tax, rounding,
// discount, quantity, cash and change lines. When the label stands alone,
// the amount is taken from the next line. Without any total line the
// largest decimal amount not on a payment line is used. It returns the
// line index of the amount (-1).
func findTotal(doc *Document) (Field, int) {
	var best Field
	bestLine, bestScore := -1, 0.0
	for i := range doc.Lines {
		l := &doc.Lines[i]
		loc := totalRE.FindStringIndex(l.Text)
		if loc == nil {
			continue
		}
		low := lower(l)
		if totalExclRE.MatchString(low) && !strings.Contains(low, "incl") {
			continue
		}
		score := 3.0
		if grandRE.MatchString(l.Text) {
			score = 4
		}
		line, m, ok := amountAfter(doc, i, loc[1])
		if !ok {
			continue
		}
		if parseFloat(m.value) <= 0 {
			continue
		}
		if !m.decimals {
			score -= 1.5
		}
		if line != i {
			score -= 0.5
		}
		if score >= bestScore {
			ll := &doc.Lines[line]
			ids, conf := ll.span(m.start, m.end)
			best = Field{Value: strings.TrimPrefix(m.value, "-"), Raw: strings.TrimSpace(ll.Text[m.start:m.end]), Confidence: conf * (0.5 + 0.1*score), BoxIDs: ids}
			bestLine, bestScore = line, score
		}
	}
	if bestLine >= 0 {
		return best, bestLine
	}
	// No total line: a subtotal line, else the largest decimal amount not
	// on a payment line.
	for i := range doc.Lines {
		l := &doc.Lines[i]
		loc := subtotalRE.FindStringIndex(l.Text)
		if loc == nil {
			continue
		}
		if ms := findAmounts(l.Text[loc[1]:]); len(ms) > 0 {
			m := pickAmount(ms)
			if parseFloat(m.value) <= 0 {
				continue
			}
			ids, conf := l.span(m.start+loc[1], m.end+loc[1])
			best = Field{Value: m.value, Raw: strings.TrimSpace(l.Text[loc[1]+m.start : loc[1]+m.end]), Confidence: conf * 0.4, BoxIDs: ids}
			bestLine = i
		}
	}
	if bestLine >= 0 {
		return best, bestLine
	}
	var bestVal float64
	for i := range doc.Lines {
		l := &doc.Lines[i]
		if payLineRE.MatchString(l.Text) || totalExclRE.MatchString(l.Text) {
			continue
		}
		for _, m := range findAmounts(l.Text) {
			if !m.decimals || strings.HasPrefix(m.value, "-") {
				continue
			}
			if v := parseFloat(m.value); v > bestVal {
				ids, conf := l.span(m.start, m.end)
				best = Field{Value: m.value, Raw: strings.TrimSpace(l.Text[m.start:m.end]), Confidence: conf * 0.3, BoxIDs: ids}
				bestVal, bestLine = v, i
			}
		}
	}
	return best, bestLine
}

var subtotalRE = regexp.MustCompile(`(?i)\bsub[\s-]*total\b|소계`)

// amountAfter returns the last amount of line i after byte offset from or,
// when the line is only a label, the first amount of the next two lines
// that are not themselves totals.
func amountAfter(doc *Document, i, from int) (line int, m amountMatch, ok bool) {
	l := &doc.Lines[i]
	ms := findAmounts(l.Text[from:])
	if len(ms) > 0 {
		m = pickAmount(ms)
		m.start += from
		m.end += from
		return i, m, true
	}
	if !totalLabelOnl.MatchString(l.Text) {
		return 0, m, false
	}
	for j := i + 1; j < len(doc.Lines) && j <= i+2; j++ {
		next := &doc.Lines[j]
		if totalRE.MatchString(next.Text) {
			return 0, m, false
		}
		if ms := findAmounts(next.Text); len(ms) > 0 {
			return j, pickAmount(ms), true
		}
	}
	return 0, m, false
}

// pickAmount prefers the last amount with decimals, else the last one.
func pickAmount(ms []amountMatch) amountMatch {
	for k := len(ms) - 1; k >= 0; k-- {
		if ms[k].decimals {
			return ms[k]
		}
	}
	return ms[len(ms)-1]
}

func parseFloat(s string) float64 {
	var f float64
	_, err := fmt.Sscan(s, &f)
	if err != nil {
		return 0
	}
	return f
}

// findCurrency takes the currency written on the total's line, else the
// one written most often in the document.
func findCurrency(doc *Document) Field {
	if _, line := findTotal(doc); line >= 0 {
		l := &doc.Lines[line]
		if cs := findCurrencies(l.Text); len(cs) > 0 {
			c := cs[len(cs)-1]
			ids, conf := l.span(c.start, c.end)
			return Field{Value: c.currency, Raw: c.value, Confidence: conf * 0.9, BoxIDs: ids}
		}
	}
	count := map[string]int{}
	first := map[string]Field{}
	bestN, best := 0, ""
	for i := range doc.Lines {
		l := &doc.Lines[i]
		for _, c := range findCurrencies(l.Text) {
			count[c.currency]++
			if _, ok := first[c.currency]; !ok {
				ids, conf := l.span(c.start, c.end)
				first[c.currency] = Field{Value: c.currency, Raw: c.value, Confidence: conf * 0.6, BoxIDs: ids}
			}
			if n := count[c.currency]; n > bestN {
				bestN, best = n, c.currency
			}
		}
	}
	if best == "" {
		return Field{}
	}
	return first[best]
}

var invoiceNoRE = regexp.MustCompile(`(?i)\b(?P<label>(?:tax\s+)?invoice|inv|receipt|rcpt|resit|bill|cs|doc(?:ument)?|ref(?:erence)?|order|trans(?:action)?|txn|slip|check|chk)\s*(?:no\b\.?|number|num|#|nbr)\s*[:.#]?\s*(?P<num>[A-Z0-9][A-Z0-9\-/]{2,})|(?:영수증|거래|승인)\s*번호\s*[:.]?\s*(?P<num2>[A-Z0-9][A-Z0-9\-/]{2,})`)

// invoiceLabelRank orders invoice-number labels, best first.
var invoiceLabelRank = []string{"invoice", "inv", "receipt", "rcpt", "resit", "bill", "cs", "doc", "document"}

// findInvoiceNumber finds "Invoice No: ...", "Receipt #...", "Bill No ...",
// "영수증번호 ..." and similar, preferring invoice over receipt over bill
// over other references.
func findInvoiceNumber(doc *Document) Field {
	var best Field
	bestRank := 1 << 30
	for i := range doc.Lines {
		l := &doc.Lines[i]
		idx := invoiceNoRE.FindStringSubmatchIndex(l.Text)
		if idx == nil {
			continue
		}
		g := func(name string) (int, int) {
			k := invoiceNoRE.SubexpIndex(name)
			return idx[2*k], idx[2*k+1]
		}
		s, e := g("num")
		if s < 0 {
			s, e = g("num2")
		}
		num := l.Text[s:e]
		if !strings.ContainsAny(num, "0123456789") {
			continue
		}
		rank := len(invoiceLabelRank)
		if ls, le := g("label"); ls >= 0 {
			label := strings.ToLower(strings.TrimPrefix(strings.ToLower(l.Text[ls:le]), "tax "))
			for r, want := range invoiceLabelRank {
				if label == want {
					rank = r
					break
				}
			}
		} else {
			rank = 2
		}
		if rank < bestRank {
			ids, conf := l.span(s, e)
			best = Field{Value: num, Raw: num, Confidence: conf * 0.85, BoxIDs: ids}
			bestRank = rank
		}
	}
	return best
}

var (
	taxRE     = regexp.MustCompile(`(?i)\b(gst|vat|sst|tax|cukai)\b|부가세|부가가치세|세액`)
	taxExclRE = regexp.MustCompile(`(?i)\b(reg|regn|registration|id|no|incl|inclusive|including|excl|exclusive|excluding|summary|invoice|rate|code)\b|사업자`)
	taxGoodRE = regexp.MustCompile(`(?i)\b(total\s+(gst|tax|vat|sst)|(gst|tax|vat|sst)\s+(amount|amt|payable))\b|부가세|세액`)
)

// findTax finds the tax amount on a GST/VAT/SST/tax/부가세 line that is not
// a registration number, an inclusive/exclusive total or a summary header.
func findTax(doc *Document) Field {
	var best Field
	bestScore := 0.0
	for i := range doc.Lines {
		l := &doc.Lines[i]
		loc := taxRE.FindStringIndex(l.Text)
		if loc == nil || taxExclRE.MatchString(l.Text) {
			continue
		}
		ms := findAmounts(l.Text[loc[1]:])
		if len(ms) == 0 {
			continue
		}
		m := pickAmount(ms)
		if !m.decimals {
			continue
		}
		m.start += loc[1]
		m.end += loc[1]
		score := 1.0
		if taxGoodRE.MatchString(l.Text) {
			score = 2
		}
		if score >= bestScore {
			ids, conf := l.span(m.start, m.end)
			best = Field{Value: m.value, Raw: strings.TrimSpace(l.Text[m.start:m.end]), Confidence: conf * (0.5 + 0.2*score), BoxIDs: ids}
			bestScore = score
		}
	}
	return best
}

// findPairs finds labelled "key: value" pairs: a line "Cashier: Ali" or
// "Date:25/12/2018 Time: 10:30" (several pairs on a line are split at each
// word ending in a colon; the first key may have up to five words, later
// keys one).
func findPairs(doc *Document) []Pair {
	var out []Pair
	for i := range doc.Lines {
		l := &doc.Lines[i]
		type tok struct {
			text  string
			word  int // index into l.Words
			isKey bool
		}
		var toks []tok
		for wi, w := range l.Words {
			t := w.Text
			switch {
			case t == ":" || t == "：":
				if n := len(toks); n > 0 && !toks[n-1].isKey {
					toks[n-1].isKey = true
				}
				continue
			case strings.HasSuffix(t, ":") || strings.HasSuffix(t, "："):
				k := strings.TrimRight(t, ":：")
				if letters(k) > 0 {
					toks = append(toks, tok{k, wi, true})
					continue
				}
			default:
				// "Date:25/12/2018": a letters-only key glued to its value.
				if c := strings.IndexAny(t, ":："); c > 0 && c < len(t)-1 && letters(t[:c]) == len([]rune(t[:c])) {
					_, sz := firstRuneSize(t[c:])
					toks = append(toks, tok{t[:c], wi, true}, tok{t[c+sz:], wi, false})
					continue
				}
			}
			toks = append(toks, tok{t, wi, false})
		}
		for k := 0; k < len(toks); k++ {
			if !toks[k].isKey {
				continue
			}
			// Key: this token, plus (for the first key of the line) up to
			// four plain tokens before it.
			from := k
			firstKey := true
			for j := 0; j < k; j++ {
				if toks[j].isKey {
					firstKey = false
				}
			}
			if firstKey {
				for from > 0 && k-from < 4 && !toks[from-1].isKey {
					from--
				}
			}
			end := k + 1
			for end < len(toks) && !toks[end].isKey {
				end++
			}
			// For a later key on the line, the value of the previous key ends before it.
			var keyParts, valParts []string
			for _, t := range toks[from : k+1] {
				keyParts = append(keyParts, t.text)
			}
			for _, t := range toks[k+1 : end] {
				valParts = append(valParts, t.text)
			}
			key := cleanEnds(strings.Join(keyParts, " "))
			val := strings.TrimSpace(strings.Join(valParts, " "))
			if letters(key) < 2 || val == "" {
				continue
			}
			var ids []int64
			var conf float64
			for _, t := range toks[from:end] {
				w := l.Words[t.word]
				if len(ids) == 0 || ids[len(ids)-1] != w.ID {
					ids = append(ids, w.ID)
					conf += w.Confidence
				}
			}
			out = append(out, Pair{Key: key, Value: val, Confidence: conf / float64(len(ids)) * 0.9, BoxIDs: ids})
		}
	}
	return out
}

func firstRuneSize(s string) (rune, int) {
	for _, r := range s {
		return r, len(string(r))
	}
	return 0, 0
}

// fromPairs fills a field without a built-in rule from the first pair
// whose key contains one of labels (case-insensitively).
func fromPairs(pairs []Pair, labels []string) Field {
	for _, p := range pairs {
		key := strings.ToLower(p.Key)
		for _, lab := range labels {
			if lab != "" && strings.Contains(key, strings.ToLower(lab)) {
				return Field{Value: p.Value, Raw: p.Key + ": " + p.Value, Confidence: p.Confidence, BoxIDs: p.BoxIDs}
			}
		}
	}
	return Field{}
}
