package excel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/xuri/excelize/v2"

	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/pipeline/layout"
	"github.com/docpipe/docpipe/tracking"
)

// Sheet names of a document workbook.
const (
	SheetFields = "Fields"
	SheetTable  = "Table"
	SheetText   = "Text"
	SheetPairs  = "Pairs" // only when the extractor found key/value pairs
)

// Result is the excel stage's task result, which becomes the chain's
// final_result (the summary reads it back).
type Result struct {
	Workbook string            `json:"workbook"`  // path of the written workbook
	FileName string            `json:"file_name"` // the document's name, as submitted
	Fields   map[string]string `json:"fields"`    // extracted field values, by name
	Tables   int               `json:"tables"`    // tables written to the Table sheet
}

// Extraction is the part of pipeline.llm_stage's result this package reads.
// It is decoded tolerantly: a field may be an object or a bare value, and
// values may be strings or numbers.
type Extraction struct {
	Fields    map[string]Field `json:"fields"`
	Pairs     []Pair           `json:"pairs"`
	Extractor string           `json:"extractor"`
}

// Field is one extracted field.
type Field struct {
	Value      string  `json:"value"`
	Confidence float64 `json:"confidence"`
	BoxIDs     []int64 `json:"box_ids"`
}

// UnmarshalJSON accepts {"value": ..., "confidence": ..., "box_ids": [...]}
// or a bare value.
func (f *Field) UnmarshalJSON(b []byte) error {
	var obj struct {
		Value      flexString `json:"value"`
		Confidence float64    `json:"confidence"`
		BoxIDs     []int64    `json:"box_ids"`
	}
	if len(b) > 0 && b[0] == '{' {
		if err := json.Unmarshal(b, &obj); err != nil {
			return err
		}
		*f = Field{Value: string(obj.Value), Confidence: obj.Confidence, BoxIDs: obj.BoxIDs}
		return nil
	}
	if err := json.Unmarshal(b, &obj.Value); err != nil {
		return err
	}
	*f = Field{Value: string(obj.Value)}
	return nil
}

// Pair is a key/value pair the extractor read off the document.
type Pair struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// UnmarshalJSON accepts string or number keys and values.
func (p *Pair) UnmarshalJSON(b []byte) error {
	var v struct {
		Key   flexString `json:"key"`
		Value flexString `json:"value"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*p = Pair{Key: string(v.Key), Value: string(v.Value)}
	return nil
}

// Stage is pipeline.excel_stage: it writes the document workbook of a chain
// from its extraction and layout results. It is safe for concurrent use.
type Stage struct {
	outDir string
}

var _ pipeline.Stage = (*Stage)(nil)

// NewStage returns the excel stage, or an error when opts are invalid.
func NewStage(opts Options) (*Stage, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return &Stage{outDir: opts.OutDir}, nil
}

// Run writes <OutDir>/<batch_id or "single">/<file-stem>-<chain_id short>.xlsx
// and returns a Result. A stage result that is missing (the workflow has
// no such stage) leaves its sheets empty; one that does not decode is a
// permanent error; a read or write error is returned to be retried.
func (s *Stage) Run(ctx context.Context, job *pipeline.Job) (*pipeline.Output, error) {
	if job.ChainID == "" {
		return nil, tracking.Permanent(errors.New("excel: job has no chain"))
	}
	var ext Extraction
	if err := readResult(ctx, job, tracking.StageLLM, &ext); err != nil {
		return nil, err
	}
	var lay layout.Layout
	if err := readResult(ctx, job, tracking.StageLayout, &lay); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	name := fileName(job.Input)
	path := filepath.Join(s.outDir, batchDir(job.BatchID), docStem(name)+"-"+shortID(job.ChainID)+".xlsx")
	if err := WriteDocument(path, &ext, &lay); err != nil {
		return nil, fmt.Errorf("excel: chain %s: %w", job.ChainID, err)
	}
	res := Result{Workbook: path, FileName: name, Fields: make(map[string]string, len(ext.Fields)), Tables: len(lay.Tables)}
	for k, f := range ext.Fields {
		res.Fields[k] = f.Value
	}
	return &pipeline.Output{Result: res}, nil
}

// readResult decodes the chain's result of stage into v; a missing result
// leaves v as it is.
func readResult(ctx context.Context, job *pipeline.Job, stage tracking.Stage, v any) error {
	raw, err := job.Reader.StageResult(ctx, job.ChainPK, stage)
	if errors.Is(err, tracking.ErrNotFound) {
		if job.Logger != nil {
			job.Logger.InfoContext(ctx, "no stage result; its sheets stay empty", "result_of", stage)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("excel: read %s result of chain %s: %w", stage, job.ChainID, err)
	}
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return tracking.Permanent(fmt.Errorf("excel: decode %s result of chain %s: %w", stage, job.ChainID, err))
	}
	return nil
}

// fileName is the name a document was submitted under.
func fileName(in tracking.ChainInput) string {
	if in.FileName != "" {
		return in.FileName
	}
	if in.ImagePath != "" {
		return filepath.Base(in.ImagePath)
	}
	return ""
}

func batchDir(batchID string) string {
	if batchID == "" {
		return "single"
	}
	return safeName(batchID, 200)
}

func docStem(name string) string {
	stem := strings.TrimSuffix(name, filepath.Ext(name))
	if stem == "" {
		return "document"
	}
	return safeName(stem, 100)
}

// shortID is the first 8 letters or digits of a chain id.
func shortID(id string) string {
	var b strings.Builder
	for _, r := range id {
		if b.Len() == 8 {
			break
		}
		if r < 128 && (r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "chain"
	}
	return b.String()
}

// WriteDocument writes a document workbook to path (atomically): sheet
// Fields (field, value, confidence, box ids), sheet Table (every table as
// an Excel table, numbers as numbers), sheet Text (every line with its
// confidence and box), and sheet Pairs when ext has pairs.
func WriteDocument(path string, ext *Extraction, lay *layout.Layout) error {
	f := excelize.NewFile()
	defer f.Close()
	st, err := newStyles(f)
	if err != nil {
		return err
	}
	if err := f.SetSheetName("Sheet1", SheetFields); err != nil {
		return fmt.Errorf("name sheet: %w", err)
	}
	if err := writeFields(f, st, ext); err != nil {
		return fmt.Errorf("sheet %s: %w", SheetFields, err)
	}
	if _, err := f.NewSheet(SheetTable); err != nil {
		return fmt.Errorf("sheet %s: %w", SheetTable, err)
	}
	if err := writeTables(f, st, lay.Tables); err != nil {
		return fmt.Errorf("sheet %s: %w", SheetTable, err)
	}
	if _, err := f.NewSheet(SheetText); err != nil {
		return fmt.Errorf("sheet %s: %w", SheetText, err)
	}
	if err := writeText(f, st, lay.Lines); err != nil {
		return fmt.Errorf("sheet %s: %w", SheetText, err)
	}
	if len(ext.Pairs) > 0 {
		if _, err := f.NewSheet(SheetPairs); err != nil {
			return fmt.Errorf("sheet %s: %w", SheetPairs, err)
		}
		if err := writePairs(f, st, ext.Pairs); err != nil {
			return fmt.Errorf("sheet %s: %w", SheetPairs, err)
		}
	}
	f.SetActiveSheet(0)
	return saveAtomic(f, path)
}

// styles are the cell styles of a workbook.
type styles struct {
	header  int
	money   int // #,##0.00
	integer int // #,##0
	conf    int // 0.00
}

func newStyles(f *excelize.File) (*styles, error) {
	var st styles
	var err error
	mk := func(s *excelize.Style) int {
		if err != nil {
			return 0
		}
		var id int
		id, err = f.NewStyle(s)
		return id
	}
	money, integer, conf := "#,##0.00", "#,##0", "0.00"
	st.header = mk(&excelize.Style{
		Font:      &excelize.Font{Bold: true},
		Fill:      excelize.Fill{Type: "pattern", Pattern: 1, Color: []string{"D9E1F2"}},
		Border:    []excelize.Border{{Type: "bottom", Color: "808080", Style: 1}},
		Alignment: &excelize.Alignment{Vertical: "center"},
	})
	st.money = mk(&excelize.Style{CustomNumFmt: &money})
	st.integer = mk(&excelize.Style{CustomNumFmt: &integer})
	st.conf = mk(&excelize.Style{CustomNumFmt: &conf})
	if err != nil {
		return nil, fmt.Errorf("styles: %w", err)
	}
	return &st, nil
}

// writeRows writes rows from A1 down, styles row 1 as a header, freezes
// it, sets column widths from the content and puts an autofilter on the
// whole range.
func writeRows(f *excelize.File, st *styles, sheet string, rows [][]any, minW, maxW int) error {
	longest := make([]int, len(rows[0]))
	for r, row := range rows {
		for c, v := range row {
			cell, err := excelize.CoordinatesToCellName(c+1, r+1)
			if err != nil {
				return err
			}
			if err := f.SetCellValue(sheet, cell, v); err != nil {
				return fmt.Errorf("set %s: %w", cell, err)
			}
			longest[c] = max(longest[c], runes(fmt.Sprint(v)))
		}
	}
	last, err := excelize.CoordinatesToCellName(len(rows[0]), len(rows))
	if err != nil {
		return err
	}
	end, _ := excelize.CoordinatesToCellName(len(rows[0]), 1)
	if err := f.SetCellStyle(sheet, "A1", end, st.header); err != nil {
		return fmt.Errorf("header style: %w", err)
	}
	for c, n := range longest {
		col, _ := excelize.ColumnNumberToName(c + 1)
		if err := f.SetColWidth(sheet, col, col, colWidth(n, minW, maxW)); err != nil {
			return fmt.Errorf("width of %s: %w", col, err)
		}
	}
	if err := f.SetPanes(sheet, &excelize.Panes{Freeze: true, YSplit: 1, TopLeftCell: "A2", ActivePane: "bottomLeft"}); err != nil {
		return fmt.Errorf("freeze header: %w", err)
	}
	if len(rows) > 1 {
		if err := f.AutoFilter(sheet, "A1:"+last, nil); err != nil {
			return fmt.Errorf("autofilter: %w", err)
		}
	}
	return nil
}

// fieldNames lists the fields of ext in workbook order: KnownFields first,
// then the others by name.
func fieldNames(fields map[string]Field) []string {
	var names, extra []string
	for _, k := range KnownFields() {
		if _, ok := fields[k]; ok {
			names = append(names, k)
		}
	}
	for k := range fields {
		if !isKnown(k) {
			extra = append(extra, k)
		}
	}
	slices.Sort(extra)
	return append(names, extra...)
}

func writeFields(f *excelize.File, st *styles, ext *Extraction) error {
	rows := [][]any{{"Field", "Value", "Confidence", "Box IDs"}}
	for _, name := range fieldNames(ext.Fields) {
		fd := ext.Fields[name]
		ids := make([]string, len(fd.BoxIDs))
		for i, id := range fd.BoxIDs {
			ids[i] = strconv.FormatInt(id, 10)
		}
		rows = append(rows, []any{name, cellValue(name, fd.Value), fd.Confidence, strings.Join(ids, ", ")})
	}
	if err := writeRows(f, st, SheetFields, rows, 10, 60); err != nil {
		return err
	}
	for r := 2; r <= len(rows); r++ {
		if err := f.SetCellStyle(SheetFields, "C"+strconv.Itoa(r), "C"+strconv.Itoa(r), st.conf); err != nil {
			return err
		}
		if _, ok := rows[r-1][1].(float64); ok {
			if err := f.SetCellStyle(SheetFields, "B"+strconv.Itoa(r), "B"+strconv.Itoa(r), st.money); err != nil {
				return err
			}
		}
	}
	return nil
}

func writePairs(f *excelize.File, st *styles, pairs []Pair) error {
	rows := [][]any{{"Key", "Value"}}
	for _, p := range pairs {
		rows = append(rows, []any{p.Key, p.Value})
	}
	return writeRows(f, st, SheetPairs, rows, 10, 60)
}

func writeText(f *excelize.File, st *styles, lines []layout.Line) error {
	rows := [][]any{{"Line", "Page", "Block", "Text", "Confidence", "X0", "Y0", "X1", "Y1"}}
	for _, l := range lines {
		x0, y0, x1, y1 := l.BBox.Bounds()
		rows = append(rows, []any{l.Index + 1, l.Page, l.Block + 1, l.Text, l.Confidence, x0, y0, x1, y1})
	}
	if err := writeRows(f, st, SheetText, rows, 6, 80); err != nil {
		return err
	}
	if len(rows) > 1 {
		return f.SetCellStyle(SheetText, "E2", "E"+strconv.Itoa(len(rows)), st.conf)
	}
	return nil
}

// writeTables writes each table as an Excel table (header row, banded rows,
// autofilter), one under the other with two blank rows between them.
// Numeric cells become numbers; a table without a detected header gets
// "Column N" headers. Column widths fit the longest cell of any table.
func writeTables(f *excelize.File, st *styles, tables []layout.Table) error {
	if len(tables) == 0 {
		return f.SetCellValue(SheetTable, "A1", "No table was detected in this document.")
	}
	var longest []int
	row := 1
	for ti := range tables {
		t := &tables[ti]
		ncol := len(t.Columns)
		for len(longest) < ncol {
			longest = append(longest, 0)
		}
		// Money columns: numeric columns with any cell printed with decimals.
		money := make([]bool, ncol)
		for _, r := range t.Rows {
			for c, cell := range r.Cells {
				if cell.Number != nil && hasDecimals(cell.Text) {
					money[c] = true
				}
			}
		}
		data := t.Rows
		header := make([]string, ncol)
		if t.Header {
			for c, cell := range t.Rows[0].Cells {
				header[c] = cell.Text
			}
			data = t.Rows[1:]
		}
		header = uniqueHeaders(header)
		top := row
		for c, h := range header {
			cell, _ := excelize.CoordinatesToCellName(c+1, row)
			if err := f.SetCellStr(SheetTable, cell, h); err != nil {
				return err
			}
			longest[c] = max(longest[c], runes(h))
		}
		first, _ := excelize.CoordinatesToCellName(1, row)
		lastH, _ := excelize.CoordinatesToCellName(ncol, row)
		if err := f.SetCellStyle(SheetTable, first, lastH, st.header); err != nil {
			return err
		}
		row++
		for _, r := range data {
			for c, cell := range r.Cells {
				name, _ := excelize.CoordinatesToCellName(c+1, row)
				longest[c] = max(longest[c], runes(cell.Text))
				switch {
				case cell.Number != nil:
					if err := f.SetCellFloat(SheetTable, name, *cell.Number, -1, 64); err != nil {
						return err
					}
					style := st.integer
					if money[c] {
						style = st.money
					}
					if err := f.SetCellStyle(SheetTable, name, name, style); err != nil {
						return err
					}
				case cell.Text != "":
					if err := f.SetCellStr(SheetTable, name, cell.Text); err != nil {
						return err
					}
				}
			}
			row++
		}
		if row == top+1 { // an Excel table needs a data row
			row++
		}
		last, _ := excelize.CoordinatesToCellName(ncol, row-1)
		if err := f.AddTable(SheetTable, &excelize.Table{
			Range:          first + ":" + last,
			Name:           "Table" + strconv.Itoa(ti+1),
			StyleName:      "TableStyleLight9",
			ShowRowStripes: boolPtr(true),
		}); err != nil {
			return fmt.Errorf("table %d: %w", ti+1, err)
		}
		row += 2
	}
	for c, n := range longest {
		col, _ := excelize.ColumnNumberToName(c + 1)
		if err := f.SetColWidth(SheetTable, col, col, colWidth(n+2, 8, 60)); err != nil {
			return err
		}
	}
	return nil
}

func boolPtr(b bool) *bool { return &b }

// hasDecimals reports whether a number is printed with a decimal part
// ("12.50", "1,5", not "1,234").
func hasDecimals(s string) bool {
	s = strings.TrimRight(strings.TrimSpace(s), "-)€$£¥₹ ")
	i := strings.LastIndexAny(s, ".,")
	if i < 0 {
		return false
	}
	d := len(s) - i - 1
	return d > 0 && (d != 3 || s[i] == '.' && strings.Count(s, ".") == 1 && !strings.Contains(s[:i], ","))
}

// uniqueHeaders fills empty headers with "Column N" and makes the others
// unique (case-insensitively, as Excel wants) by numbering repeats.
func uniqueHeaders(h []string) []string {
	out := make([]string, len(h))
	seen := map[string]bool{}
	for i, s := range h {
		s = strings.TrimSpace(s)
		if s == "" {
			s = "Column " + strconv.Itoa(i+1)
		}
		base := s
		for n := 2; seen[strings.ToLower(s)]; n++ {
			s = base + " " + strconv.Itoa(n)
		}
		seen[strings.ToLower(s)] = true
		out[i] = s
	}
	return out
}
