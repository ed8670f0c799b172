package excel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/xuri/excelize/v2"

	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/tracking"
)

// SheetSummary is the only sheet of a summary workbook.
const SheetSummary = "Summary"

// SummaryResult is the summary stage's task result, which becomes the
// batch's final_result.
type SummaryResult struct {
	SummaryWorkbook string `json:"summary_workbook"`
	Documents       int    `json:"documents"` // rows written: the batch's chains
	Succeeded       int    `json:"succeeded"` // chains in SUCCESS
	Failed          int    `json:"failed"`    // every other chain (FAILURE, REVOKED, ...)
}

// SummaryStage is pipeline.summary_stage, the batch-level task: it writes
// <OutDir>/<batch_id>/summary.xlsx with one row per document of the batch.
// Rows are streamed (excelize's StreamWriter) and the archive is written
// straight to disk, so memory does not grow with the batch. It is safe for
// concurrent use.
type SummaryStage struct {
	outDir string
}

var _ pipeline.Stage = (*SummaryStage)(nil)

// NewSummaryStage returns the summary stage, or an error when opts are
// invalid.
func NewSummaryStage(opts Options) (*SummaryStage, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return &SummaryStage{outDir: opts.OutDir}, nil
}

// chainFinal is the part of a chain's final_result (the excel stage's
// Result) the summary reads; field values may be strings or numbers.
type chainFinal struct {
	Workbook string                `json:"workbook"`
	FileName string                `json:"file_name"`
	Fields   map[string]flexString `json:"fields"`
}

// Run writes the batch's summary workbook. It reads the batch's chains
// twice: once for the set of field names (the columns), once to write the
// rows. The columns are File, Chain ID, Status, the KnownFields, any other
// field seen (by name), Workbook and Error. A job without a batch is a
// permanent error.
func (s *SummaryStage) Run(ctx context.Context, job *pipeline.Job) (*pipeline.Output, error) {
	if job.BatchID == "" {
		return nil, tracking.Permanent(errors.New("excel: summary task has no batch"))
	}
	// Pass 1: the columns.
	seen := map[string]bool{}
	var extra []string
	var final chainFinal
	err := job.Reader.BatchChains(ctx, job.BatchID, func(c *tracking.Chain) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		final = chainFinal{}
		if len(c.FinalResult) > 0 {
			// A final_result that does not decode only loses its fields.
			_ = json.Unmarshal(c.FinalResult, &final)
		}
		for name := range final.Fields {
			if !isKnown(name) && !seen[name] {
				seen[name] = true
				extra = append(extra, name)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("excel: summary of batch %s: list chains: %w", job.BatchID, err)
	}
	slices.Sort(extra)
	fields := append(KnownFields(), extra...)

	path := filepath.Join(s.outDir, batchDir(job.BatchID), "summary.xlsx")
	res, err := writeSummary(ctx, path, fields, func(fn func(*tracking.Chain) error) error {
		return job.Reader.BatchChains(ctx, job.BatchID, fn)
	})
	if err != nil {
		return nil, fmt.Errorf("excel: summary of batch %s: %w", job.BatchID, err)
	}
	return &pipeline.Output{Result: res}, nil
}

// writeSummary streams one row per chain that each yields into a workbook
// saved atomically at path.
func writeSummary(ctx context.Context, path string, fields []string, each func(func(*tracking.Chain) error) error) (*SummaryResult, error) {
	f := excelize.NewFile()
	defer f.Close()
	if err := f.SetSheetName("Sheet1", SheetSummary); err != nil {
		return nil, fmt.Errorf("name sheet: %w", err)
	}
	st, err := newStyles(f)
	if err != nil {
		return nil, err
	}
	sw, err := f.NewStreamWriter(SheetSummary)
	if err != nil {
		return nil, fmt.Errorf("stream writer: %w", err)
	}
	ncol := 3 + len(fields) + 2
	widths := []float64{30, 38, 10}
	for range fields {
		widths = append(widths, 16)
	}
	widths = append(widths, 60, 50)
	for c, w := range widths {
		if err := sw.SetColWidth(c+1, c+1, w); err != nil {
			return nil, fmt.Errorf("column width: %w", err)
		}
	}
	if err := sw.SetPanes(&excelize.Panes{Freeze: true, YSplit: 1, TopLeftCell: "A2", ActivePane: "bottomLeft"}); err != nil {
		return nil, fmt.Errorf("freeze header: %w", err)
	}
	header := make([]any, 0, ncol)
	for _, h := range uniqueHeaders(append(append([]string{"File", "Chain ID", "Status"}, fields...), "Workbook", "Error")) {
		header = append(header, excelize.Cell{StyleID: st.header, Value: h})
	}
	if err := sw.SetRow("A1", header); err != nil {
		return nil, fmt.Errorf("header row: %w", err)
	}

	res := &SummaryResult{SummaryWorkbook: path}
	row := make([]any, ncol)
	var final chainFinal
	var in tracking.ChainInput
	err = each(func(c *tracking.Chain) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		final, in = chainFinal{}, tracking.ChainInput{}
		if len(c.FinalResult) > 0 {
			_ = json.Unmarshal(c.FinalResult, &final)
		}
		if len(c.InputData) > 0 {
			_ = json.Unmarshal(c.InputData, &in)
		}
		name := fileName(in)
		if name == "" {
			name = final.FileName
		}
		clear(row)
		row[0], row[1], row[2] = name, c.ChainID, string(c.Status)
		for i, fd := range fields {
			v, ok := final.Fields[fd]
			if !ok {
				continue
			}
			cv := cellValue(fd, string(v))
			if _, num := cv.(float64); num {
				cv = excelize.Cell{StyleID: st.money, Value: cv}
			}
			row[3+i] = cv
		}
		row[ncol-2], row[ncol-1] = final.Workbook, c.ErrorMessage
		cell, err := excelize.CoordinatesToCellName(1, res.Documents+2)
		if err != nil {
			return err
		}
		if err := sw.SetRow(cell, row); err != nil {
			return fmt.Errorf("row %d: %w", res.Documents+2, err)
		}
		res.Documents++
		if c.Status == tracking.StatusSuccess {
			res.Succeeded++
		} else {
			res.Failed++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("write rows: %w", err)
	}
	if res.Documents > 0 {
		last, _ := excelize.CoordinatesToCellName(ncol, res.Documents+1)
		if err := sw.AddTable(&excelize.Table{
			Range:          "A1:" + last,
			Name:           "Documents",
			StyleName:      "TableStyleLight9",
			ShowRowStripes: boolPtr(true),
		}); err != nil {
			return nil, fmt.Errorf("table: %w", err)
		}
	}
	if err := sw.Flush(); err != nil {
		return nil, fmt.Errorf("flush: %w", err)
	}
	if err := saveAtomic(f, path); err != nil {
		return nil, err
	}
	return res, nil
}
