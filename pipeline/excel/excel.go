// Package excel writes docpipe's workbooks: pipeline.excel_stage writes one
// workbook per document (its extracted fields, its tables as real cells,
// its text lines), and pipeline.summary_stage writes one summary workbook
// per batch, a row per document, streamed so that a batch of any size
// stays in small, bounded memory.
//
// Every file is written atomically: to a temporary file in the target
// directory, synced, then renamed over the final name, so a reader never
// sees half a workbook and a retried task simply replaces it.
package excel

import (
	"archive/zip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/xuri/excelize/v2"

	"github.com/docpipe/docpipe/pipeline/layout"
)

// Options configures both stages of the package.
type Options struct {
	// OutDir is the directory under which workbooks are written, one
	// folder per batch ("single" for a document submitted alone). It is
	// created when missing. Required.
	OutDir string
}

func (o Options) validate() error {
	if strings.TrimSpace(o.OutDir) == "" {
		return errors.New("excel: Options.OutDir is required")
	}
	return nil
}

// KnownFields returns the extracted fields that every workbook and the
// summary list first, in this order; any other field follows, by name.
func KnownFields() []string {
	return []string{"company", "address", "date", "total", "currency", "invoice_number", "tax"}
}

// numericFields are the fields written as numbers when their value reads as
// one (see layout.ParseNumber).
func numericField(name string) bool {
	switch name {
	case "total", "tax", "subtotal", "amount":
		return true
	}
	return false
}

func isKnown(name string) bool {
	return slices.Contains(KnownFields(), name)
}

// cellValue is what goes into a field's cell: a float64 for a numeric field
// whose value reads as a number, else the text.
func cellValue(name, value string) any {
	if numericField(name) {
		if v, ok := layout.ParseNumber(value); ok {
			return v
		}
	}
	return value
}

// flexString decodes a JSON string, number or boolean as its text, and
// null as "": the extraction result is defined elsewhere, so be tolerant.
type flexString string

func (s *flexString) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case nil:
		*s = ""
	case string:
		*s = flexString(v)
	case float64, bool:
		*s = flexString(strings.TrimSpace(string(b)))
	default:
		*s = flexString(b)
	}
	return nil
}

// safeName keeps s usable as one path element: letters, digits, '.', '-'
// and '_' stay, everything else becomes '_'; it is cut to max runes and
// never "", "." or "..".
func safeName(s string, max int) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n == max {
			break
		}
		if unicode.IsLetter(r) || unicode.IsDigit(r) || r == '.' || r == '-' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
		n++
	}
	out := strings.Trim(b.String(), ".")
	if out == "" {
		return "_"
	}
	return out
}

// saveAtomic writes f to path: a temporary file in the same directory is
// written, synced and renamed over path, and the directory is synced.
//
// The zip stream goes straight into the file (excelize's own Write would
// build the whole archive in memory first), through excelize's public
// SetZipWriter hook.
func saveAtomic(f *excelize.File, path string) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("create temp file in %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	f.SetZipWriter(func(io.Writer) excelize.ZipWriter { return zip.NewWriter(tmp) })
	if err := f.Write(io.Discard); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename to %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// colWidth is a column width fitting the longest text, within [min, max].
func colWidth(longest, min, max int) float64 {
	return float64(minmax(longest+2, min, max))
}

func minmax(v, lo, hi int) int { return max(lo, min(v, hi)) }

func runes(s string) int { return utf8.RuneCountInString(s) }
