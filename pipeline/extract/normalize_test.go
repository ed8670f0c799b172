package extract

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestParseDate(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"25/12/2018", "2018-12-25"},
		{"25-12-18", "2018-12-25"},
		{"2018-12-25", "2018-12-25"},
		{"2018/02/22 13:34:14", "2018-02-22"},
		{"12.25.2018", "2018-12-25"}, // month first: 25 cannot be a month
		{"05.02.2018", "2018-02-05"}, // ambiguous: day first
		{"25 Dec 2018", "2018-12-25"},
		{"25 December 2018", "2018-12-25"},
		{"25-DEC-18", "2018-12-25"},
		{"15/APR/2017", "2017-04-15"},
		{"Dec 25, 2018", "2018-12-25"},
		{"December 25 2018", "2018-12-25"},
		{"1st Jan 2019", "2019-01-01"},
		{"18 MAC 2018", "2018-03-18"}, // Malay
		{"5 OGOS 2017", "2017-08-05"}, // Malay
		{"2018년 12월 25일", "2018-12-25"},
		{"2018년12월5일 14:02", "2018-12-05"},
		{"18년 1월 2일", "2018-01-02"},
		{"2018. 12. 25.", "2018-12-25"},
		{"Date: 20/06/18 10:30", "2018-06-20"},
		{"Tarikh: 30-04-2018", "2018-04-30"},
		{"29/02/2016", "2016-02-29"}, // leap year
		{"01/01/70", "1970-01-01"},
		{"31/12/69", "2069-12-31"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := ParseDate(tt.in)
			if !ok || got != tt.want {
				t.Errorf("ParseDate(%q) = %q, %v; want %q", tt.in, got, ok, tt.want)
			}
		})
	}
}

func TestParseDateRejects(t *testing.T) {
	for _, in := range []string{"", "hello", "31/02/2018", "32/01/2018", "12:30:45", "1234.50", "TEL 03-4021 1233", "2018-13-01", "00/00/0000", "29/02/2017", "Dec 2018", "12/25"} {
		if got, ok := ParseDate(in); ok {
			t.Errorf("ParseDate(%q) = %q, want no date", in, got)
		}
	}
}

func TestParseAmount(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"RM 1,234.50", "1234.50"},
		{"RM1,234.50", "1234.50"},
		{"$8.60", "8.60"},
		{"8.6", "8.60"},
		{"9.00", "9.00"},
		{"213", "213"},
		{"1.234,50 €", "1234.50"},
		{"€ 12,5", "12.50"},
		{"£1,000,000.00", "1000000.00"},
		{"₩12,000", "12000"},
		{"12,000원", "12000"},
		{"합계 45,000 원", "45000"},
		{"USD 99.99", "99.99"},
		{"(5.00)", "-5.00"},
		{"-0.02", "-0.02"},
		{"Total: 53.14", "53.14"},
		{"TOTAL RM 0.50", "0.50"},
		{"1 234,50", "1234.50"},
		{"007.50", "7.50"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := ParseAmount(tt.in)
			if !ok || got != tt.want {
				t.Errorf("ParseAmount(%q) = %q, %v; want %q", tt.in, got, ok, tt.want)
			}
		})
	}
}

func TestFindAmountsSkipsNonAmounts(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"10:51 Total 8.60", []string{"8.60"}},
		{"Date 25/12/2018 12.50", []string{"12.50"}},
		{"GST @6%: $0.48", []string{"0.48"}},
		{"INV12345 5.00", []string{"5.00"}},
		{"Tel: 03-40211233", nil},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var got []string
			for _, m := range findAmounts(tt.in) {
				got = append(got, m.value)
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("findAmounts(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestCurrencyCode(t *testing.T) {
	tests := map[string]string{"RM": "MYR", "rm": "MYR", "$": "USD", "S$": "SGD", "€": "EUR", "£": "GBP", "₩": "KRW", "원": "KRW", "¥": "JPY", "XYZ": ""}
	for in, want := range tests {
		if got := currencyCode(in); got != want {
			t.Errorf("currencyCode(%q) = %q, want %q", in, got, want)
		}
	}
}

var isoRE = regexp.MustCompile(`^(19|20)\d\d-\d\d-\d\d$`)

func FuzzParseDate(f *testing.F) {
	for _, s := range []string{"25/12/2018", "25-12-18", "2018-12-25", "12.25.2018", "25 Dec 2018", "Dec 25, 2018", "2018년 12월 25일", "2018. 12. 25.", "15/APR/2017", "31/02/2018", "", "99/99/9999", "1st Jan 2019 12:30"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := ParseDate(s)
		if !ok {
			if got != "" {
				t.Fatalf("ParseDate(%q) = %q with ok=false", s, got)
			}
			return
		}
		if !isoRE.MatchString(got) {
			t.Fatalf("ParseDate(%q) = %q, not YYYY-MM-DD", s, got)
		}
		if _, err := time.Parse(time.DateOnly, got); err != nil {
			t.Fatalf("ParseDate(%q) = %q, not a real date: %v", s, got, err)
		}
		if again, ok := ParseDate(got); !ok || again != got {
			t.Fatalf("ParseDate(%q) = %q, but ParseDate(%q) = %q, %v", s, got, got, again, ok)
		}
	})
}

var decimalRE = regexp.MustCompile(`^-?(0|[1-9]\d*)(\.\d{2,3})?$`)

func FuzzParseAmount(f *testing.F) {
	for _, s := range []string{"RM 1,234.50", "$8.60", "1.234,50 €", "₩12,000", "12,000원", "(5.00)", "-0.02", "1 234,50", "", "abc", "999999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := ParseAmount(s)
		if !ok {
			return
		}
		if !decimalRE.MatchString(got) {
			t.Fatalf("ParseAmount(%q) = %q, not a plain decimal", s, got)
		}
		if again, ok := ParseAmount(got); !ok || again != got {
			t.Fatalf("ParseAmount(%q) = %q, but ParseAmount(%q) = %q, %v", s, got, got, again, ok)
		}
	})
}

// FuzzValidateAnswer feeds arbitrary model output through the LLM answer
// path: it must never panic, and whatever passes validation must convert.
func FuzzValidateAnswer(f *testing.F) {
	f.Add(goodAnswer)
	f.Add(`{"fields": {}, "pairs": []}`)
	f.Add(`{"fields": {"company": {"value": 1, "line": "x"}}, "pairs": null}`)
	f.Add(`[1, 2, {"a": null}]`)
	f.Add("```json\n{}\n```")
	f.Add(`{"fields": {"company": {"value": "A", "line": 1e400}}}`)
	f.Add(strings.Repeat("[", 100) + strings.Repeat("]", 100))
	schema := DefaultSchema()
	validator := schema.llmSchema()
	doc := testDoc()
	c := &LLM{}
	f.Fuzz(func(t *testing.T, content string) {
		fields, err := c.parse(content, doc, schema, validator)
		if err != nil {
			return
		}
		if len(fields.Fields) != len(schema.Fields) {
			t.Fatalf("valid answer %q gave %d fields, want %d", content, len(fields.Fields), len(schema.Fields))
		}
		for name, fl := range fields.Fields {
			if fl.Confidence < 0 || fl.Confidence > 1 || !utf8.ValidString(fl.Value) && utf8.ValidString(content) {
				t.Fatalf("field %s = %+v", name, fl)
			}
		}
		if _, err := json.Marshal(fields.Fields); err != nil {
			t.Fatalf("marshal: %v", err)
		}
	})
}
