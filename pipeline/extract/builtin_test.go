package extract

import (
	"slices"
	"testing"

	"github.com/docpipe/docpipe/tracking"
)

func TestBuiltinReceipts(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  map[string]string
	}{
		{
			name:  "korean",
			lines: []string{"(주)한빛상사", "서울시 강남구 테헤란로 123", "영수증번호: 2018-0042", "2018년 12월 25일 14:02", "공급가액 40,909", "부가세 4,091", "합계 45,000원"},
			want:  map[string]string{"company": "(주)한빛상사", "address": "서울시 강남구 테헤란로 123", "date": "2018-12-25", "total": "45000", "currency": "KRW", "invoice_number": "2018-0042", "tax": ""},
		},
		{
			name:  "grand total beats subtotal, tax, rounding, cash and change",
			lines: []string{"BEST MART S/B", "SUBTOTAL 100.00", "SST 6% 6.00", "ROUNDING -0.02", "GRAND TOTAL RM105.98", "CASH RM200.00", "CHANGE RM94.02"},
			want:  map[string]string{"company": "BEST MART S/B", "total": "105.98", "currency": "MYR", "tax": "6.00"},
		},
		{
			name:  "label alone, amount on the next line",
			lines: []string{"Corner Cafe", "25 Dec 2018", "TOTAL", "$12.50", "VAT amount £1.25"},
			want:  map[string]string{"company": "Corner Cafe", "date": "2018-12-25", "total": "12.50", "currency": "USD", "tax": "1.25"},
		},
		{
			name:  "euro invoice",
			lines: []string{"Müller GmbH", "Rechnung", "Invoice No. R-2019-77", "Date: Dec 5, 2019", "Amount due: 1.234,50 €"},
			want:  map[string]string{"company": "Müller GmbH", "date": "2019-12-05", "total": "1234.50", "currency": "EUR", "invoice_number": "R-2019-77"},
		},
		{
			name:  "only a subtotal",
			lines: []string{"SHOP A", "SubTotal: 635.00", "GST Summary: Amount Tax"},
			want:  map[string]string{"total": "635.00"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Builtin{}.Extract(t.Context(), NewDocument(testOCR(tt.lines...), DefaultSchema()))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.want {
				if got.Fields[k].Value != v {
					t.Errorf("%s = %q, want %q", k, got.Fields[k].Value, v)
				}
			}
		})
	}
}

func TestNewDocumentGrouping(t *testing.T) {
	full := testOCR("HELLO WORLD", "TOTAL 5.00")
	only := func(level string) *tracking.OCRResult {
		o := *full
		o.Boxes = nil
		for _, b := range full.Boxes {
			if b.Level == level {
				o.Boxes = append(o.Boxes, b)
			}
		}
		return &o
	}
	tests := []struct {
		name     string
		ocr      *tracking.OCRResult
		wantIDs  []int64 // ids of the words of the second line
		wantLine int64   // id of the second line's box
	}{
		{"lines and words", full, []int64{5, 6}, 4},
		{"words only", only(tracking.LevelWord), []int64{5, 6}, 0},
		{"lines only", only(tracking.LevelLine), []int64{4, 4}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := NewDocument(tt.ocr, nil)
			if len(doc.Lines) != 2 {
				t.Fatalf("lines = %+v", doc.Lines)
			}
			l := doc.Lines[1]
			var ids []int64
			for _, w := range l.Words {
				ids = append(ids, w.ID)
			}
			if l.Text != "TOTAL 5.00" || l.ID != tt.wantLine || !slices.Equal(ids, tt.wantIDs) {
				t.Errorf("line = %q id %d words %v; want ids %v line %d", l.Text, l.ID, ids, tt.wantIDs, tt.wantLine)
			}
		})
	}
	if doc := NewDocument(nil, nil); len(doc.Lines) != 0 {
		t.Errorf("nil OCR gave %d lines", len(doc.Lines))
	}
}
