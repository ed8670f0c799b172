// Package extract is docpipe's field-extraction stage (pipeline.llm_stage).
//
// It turns a document's OCR words and lines into named fields (company,
// address, date, total, currency, invoice number, tax, ... as a Schema
// lists them) plus the labelled "key: value" pairs found in the text. Two
// Extractors exist: Builtin, an offline rule-based extractor for receipts
// and invoices (the default), and LLM, a client for any OpenAI-compatible
// chat-completions endpoint (llama.cpp server, vLLM, Ollama, OpenAI) that
// asks for a strict JSON-schema answer and validates it.
//
// Stage adapts both to pipeline.Stage; its Result is the JSON document the
// Excel and summary stages read.
package extract

import (
	"context"
	"slices"
	"sort"
	"strings"

	"github.com/docpipe/docpipe/tracking"
)

// Extractor finds a Document's fields. Implementations must honour ctx and
// be safe for concurrent use. An error wrapped with tracking.Permanent means
// no retry can help (bad input, a rejected request); any other error may be
// retried.
type Extractor interface {
	Extract(ctx context.Context, doc *Document) (*Fields, error)
}

// Word is one recognised word of a Document.
type Word struct {
	ID         int64         // ocr_text_boxes.id (0 when the boxes were never stored)
	Text       string        // as recognised
	Confidence float64       // 0.0–1.0
	BBox       tracking.BBox // in image pixels
	Page       int           // 1-based
	Seq        int           // reading order of the box in its OCR execution
}

// Line is one text line of a Document: its words in reading order.
type Line struct {
	ID    int64         // the line box's ocr_text_boxes.id, 0 when the line was rebuilt from words
	Text  string        // the words joined by single spaces
	Words []Word        // in reading order; never empty
	BBox  tracking.BBox // bounding box of the words (or the line box)
	Page  int           // 1-based
	Index int           // position in Document.Lines
	// starts[i] is the byte offset of Words[i] in Text.
	starts []int
}

// Document is what an Extractor reads: a page's OCR lines in reading order
// and the Schema that says which fields to find.
type Document struct {
	Lines  []Line
	Width  int // of the first page, in pixels (0 when unknown)
	Height int // of the first page, in pixels (0 when unknown)
	Schema *Schema
}

// Field is one extracted field.
type Field struct {
	// Value is the normalised value: ISO 8601 (YYYY-MM-DD) for dates, a
	// plain decimal ("1234.50") for amounts, an ISO 4217 code for
	// currencies, otherwise the text with whitespace collapsed. Empty when
	// the field was not found.
	Value string `json:"value"`
	// Raw is the text the value came from, as recognised.
	Raw string `json:"raw,omitempty"`
	// Confidence is how sure the extractor is, from 0 to 1 (0 when not found).
	Confidence float64 `json:"confidence"`
	// BoxIDs are the ocr_text_boxes ids of the words the value came from.
	BoxIDs []int64 `json:"box_ids"`
}

// Pair is a labelled "key: value" pair found in the text.
type Pair struct {
	Key        string  `json:"key"`
	Value      string  `json:"value"`
	Confidence float64 `json:"confidence"`
	BoxIDs     []int64 `json:"box_ids"`
}

// Fields is what an Extractor returns: every field of the Schema (a field
// that was not found has an empty Value) and the labelled pairs.
type Fields struct {
	Fields map[string]Field
	Pairs  []Pair
}

// NewDocument builds a Document from an OCR result. Word boxes are grouped
// under the line box that contains their centre; when the result has no
// line boxes, words are grouped into lines by vertical overlap; when it has
// only line boxes, each line is split into pseudo-words that carry the
// line's id. Lines keep the OCR's reading order (Seq). A nil ocr gives an
// empty Document.
func NewDocument(ocr *tracking.OCRResult, schema *Schema) *Document {
	doc := &Document{Schema: schema}
	if ocr == nil {
		return doc
	}
	doc.Width, doc.Height = ocr.Width, ocr.Height

	var words, lines []tracking.TextBox
	for _, b := range ocr.Boxes {
		if strings.TrimSpace(b.Text) == "" {
			continue
		}
		if b.Level == tracking.LevelLine {
			lines = append(lines, b)
		} else {
			words = append(words, b)
		}
	}
	bySeq := func(a, b tracking.TextBox) int {
		if a.Page != b.Page {
			return a.Page - b.Page
		}
		return a.Seq - b.Seq
	}
	slices.SortStableFunc(words, bySeq)
	slices.SortStableFunc(lines, bySeq)

	switch {
	case len(lines) > 0:
		doc.Lines = groupUnderLines(lines, words)
	default:
		doc.Lines = groupByOverlap(words)
	}
	for i := range doc.Lines {
		doc.Lines[i].Index = i
		doc.Lines[i].index()
	}
	return doc
}

func toWord(b tracking.TextBox) Word {
	return Word{ID: b.ID, Text: strings.TrimSpace(b.Text), Confidence: b.Confidence, BBox: b.BBox, Page: b.Page, Seq: b.Seq}
}

// groupUnderLines puts every word under a line box: among the lines whose
// box contains the word's centre, the nearest one before it in reading order
// (OCR engines emit a line and then its words), else the first such line,
// else the line it overlaps most vertically. Lines left without words are
// split into pseudo-words.
func groupUnderLines(lines, words []tracking.TextBox) []Line {
	out := make([]Line, len(lines))
	for i, l := range lines {
		out[i] = Line{ID: l.ID, BBox: l.BBox, Page: l.Page}
	}
	var orphans []tracking.TextBox
	for _, w := range words {
		best, bestScore := -1, 0.0
		wx0, wy0, wx1, wy1 := w.BBox.Bounds()
		cx, cy := (wx0+wx1)/2, (wy0+wy1)/2
		for i, l := range lines {
			if l.Page != w.Page {
				continue
			}
			x0, y0, x1, y1 := l.BBox.Bounds()
			inside := cx >= x0 && cx <= x1 && cy >= y0 && cy <= y1
			score := 0.0
			switch {
			case inside && l.Seq < w.Seq:
				score = 3 + float64(l.Seq+1)/float64(w.Seq+1) // the nearest preceding line scores highest
			case inside:
				score = 2
			default:
				if ov := min(y1, wy1) - max(y0, wy0); ov > 0 && cx >= x0-5 && cx <= x1+5 {
					score = ov / max(wy1-wy0, 1)
				}
			}
			if score > bestScore {
				best, bestScore = i, score
			}
		}
		if best < 0 {
			orphans = append(orphans, w)
			continue
		}
		out[best].Words = append(out[best].Words, toWord(w))
	}
	for i, l := range lines {
		if len(out[i].Words) == 0 {
			out[i].Words = splitLine(l)
		}
		slices.SortStableFunc(out[i].Words, func(a, b Word) int { return a.Seq - b.Seq })
	}
	out = append(out, groupByOverlap(orphans)...)
	return out
}

// splitLine makes pseudo-words of a line box that has no word boxes.
func splitLine(l tracking.TextBox) []Word {
	var ws []Word
	for f := range strings.FieldsSeq(l.Text) {
		ws = append(ws, Word{ID: l.ID, Text: f, Confidence: l.Confidence, BBox: l.BBox, Page: l.Page, Seq: l.Seq})
	}
	return ws
}

// groupByOverlap rebuilds lines from words in reading order: a word joins
// the current line when it is on the same page and overlaps it vertically
// by at least half its height.
func groupByOverlap(words []tracking.TextBox) []Line {
	var out []Line
	for _, b := range words {
		w := toWord(b)
		if n := len(out); n > 0 && out[n-1].Page == w.Page {
			_, ly0, _, ly1 := out[n-1].BBox.Bounds()
			_, wy0, _, wy1 := w.BBox.Bounds()
			if ov := min(ly1, wy1) - max(ly0, wy0); ov >= 0.5*max(wy1-wy0, 1) {
				out[n-1].Words = append(out[n-1].Words, w)
				out[n-1].BBox = union(out[n-1].BBox, w.BBox)
				continue
			}
		}
		out = append(out, Line{Words: []Word{w}, BBox: w.BBox, Page: w.Page})
	}
	return out
}

func union(a, b tracking.BBox) tracking.BBox {
	ax0, ay0, ax1, ay1 := a.Bounds()
	bx0, by0, bx1, by1 := b.Bounds()
	return tracking.Rect(min(ax0, bx0), min(ay0, by0), max(ax1, bx1), max(ay1, by1))
}

// index builds Text and the word offsets.
func (l *Line) index() {
	var sb strings.Builder
	l.starts = make([]int, len(l.Words))
	for i, w := range l.Words {
		if i > 0 {
			sb.WriteByte(' ')
		}
		l.starts[i] = sb.Len()
		sb.WriteString(w.Text)
	}
	l.Text = sb.String()
}

// span returns the words of l that overlap the byte range [start, end) of
// l.Text, with their ids and mean confidence.
func (l *Line) span(start, end int) (ids []int64, conf float64) {
	n := 0
	for i, w := range l.Words {
		ws, we := l.starts[i], l.starts[i]+len(w.Text)
		if we <= start || ws >= end {
			continue
		}
		if len(ids) == 0 || ids[len(ids)-1] != w.ID {
			ids = append(ids, w.ID)
		}
		conf += w.Confidence
		n++
	}
	if n > 0 {
		conf /= float64(n)
	}
	return ids, conf
}

// all returns the ids and mean confidence of every word of l.
func (l *Line) all() (ids []int64, conf float64) { return l.span(0, len(l.Text)) }

// Text returns the document's text, one line per Line.
func (d *Document) Text() string {
	var sb strings.Builder
	for _, l := range d.Lines {
		sb.WriteString(l.Text)
		sb.WriteByte('\n')
	}
	return sb.String()
}

// complete makes sure f has an entry for every schema field and drops
// fields the schema does not list, and sorts box ids.
func (f *Fields) complete(s *Schema) {
	if f.Fields == nil {
		f.Fields = make(map[string]Field)
	}
	if s != nil {
		keep := make(map[string]bool, len(s.Fields))
		for _, sf := range s.Fields {
			keep[sf.Name] = true
			if _, ok := f.Fields[sf.Name]; !ok {
				f.Fields[sf.Name] = Field{}
			}
		}
		for name := range f.Fields {
			if !keep[name] {
				delete(f.Fields, name)
			}
		}
	}
	for name, v := range f.Fields {
		if v.BoxIDs == nil {
			v.BoxIDs = []int64{}
		}
		sort.Slice(v.BoxIDs, func(i, j int) bool { return v.BoxIDs[i] < v.BoxIDs[j] })
		v.BoxIDs = slices.Compact(v.BoxIDs)
		v.Confidence = clamp01(v.Confidence)
		f.Fields[name] = v
	}
	if f.Pairs == nil {
		f.Pairs = []Pair{}
	}
	for i := range f.Pairs {
		if f.Pairs[i].BoxIDs == nil {
			f.Pairs[i].BoxIDs = []int64{}
		}
		f.Pairs[i].Confidence = clamp01(f.Pairs[i].Confidence)
	}
}

func clamp01(x float64) float64 {
	switch {
	case x != x || x < 0: // NaN or negative
		return 0
	case x > 1:
		return 1
	}
	return x
}
