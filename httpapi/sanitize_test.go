package httpapi

import (
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSanitizeFileName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"invoice.png", "invoice.png"},
		{"scan 2024-01-02.TIFF", "scan_2024-01-02.TIFF"},
		{"../../etc/passwd", "passwd"},
		{`..\..\windows\system32\config`, "config"},
		{"/abs/path/x.jpg", "x.jpg"},
		{"..", "upload"},
		{".", "upload"},
		{"", "upload"},
		{"/", "upload"},
		{".htaccess", "htaccess"},
		{"...png", "png"},
		{"a\x00b.png", "a_b.png"},
		{"a\nb\r.png", "a_b_.png"},
		{"Rechnung_Müller.pdf", "Rechnung_Müller.pdf"},
		{"請求書.png", "請求書.png"},
		{"evil\u202Egnp.exe", "evil_gnp.exe"},
		{"\xff\xfe.png", "__.png"},
		{"a:b*c?.png", "a_b_c_.png"},
		{strings.Repeat("a", 300) + ".png", strings.Repeat("a", maxFileNameBytes-4) + ".png"},
	}
	for _, tt := range tests {
		if got := sanitizeFileName(tt.in); got != tt.want {
			t.Errorf("sanitizeFileName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzSanitizeFileName(f *testing.F) {
	for _, s := range []string{"invoice.png", "../../etc/passwd", `..\..\x`, "..", ".", "", "a/b/../..", "\x00", ".hidden",
		strings.Repeat("é", 200) + ".png", "a.\xff\xfe", "x/.", "x/..", "日本語.jpg", strings.Repeat(".", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got := sanitizeFileName(in)
		switch {
		case got == "" || got == "." || got == "..":
			t.Fatalf("sanitizeFileName(%q) = %q", in, got)
		case strings.ContainsAny(got, "/\\\x00"):
			t.Fatalf("sanitizeFileName(%q) = %q has a separator or NUL", in, got)
		case strings.HasPrefix(got, "."):
			t.Fatalf("sanitizeFileName(%q) = %q is hidden", in, got)
		case !utf8.ValidString(got):
			t.Fatalf("sanitizeFileName(%q) = %q is not UTF-8", in, got)
		case len(got) > maxFileNameBytes:
			t.Fatalf("sanitizeFileName(%q) is %d bytes", in, len(got))
		}
		for _, r := range got {
			if r < ' ' || r == 0x7f {
				t.Fatalf("sanitizeFileName(%q) = %q has a control character", in, got)
			}
		}
		dir := filepath.Join("/data", "uploads", "id")
		if p := filepath.Join(dir, got); filepath.Dir(p) != dir {
			t.Fatalf("sanitizeFileName(%q) = %q escapes: %s", in, got, p)
		}
		for _, n := range []int{1, 5, 20, 60} { // names cut to fit a path budget
			if fit := fitName(got, n); fit == "" || len(fit) > n || strings.HasPrefix(fit, ".") || !utf8.ValidString(fit) {
				t.Fatalf("fitName(%q, %d) = %q", got, n, fit)
			}
		}
		if again := sanitizeFileName(got); again != got {
			t.Fatalf("not idempotent: %q -> %q -> %q", in, got, again)
		}
	})
}
