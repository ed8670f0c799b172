package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"time"

	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/pipeline/excel"
	"github.com/docpipe/docpipe/pipeline/extract"
	"github.com/docpipe/docpipe/pipeline/layout"
	"github.com/docpipe/docpipe/pipeline/ocr"
	"github.com/docpipe/docpipe/tracking"
)

// stageFlags are the settings of the stages this process runs.
type stageFlags struct {
	Stages        string // comma-separated short names, "all" or "none"
	OCRWorkers    int
	LLMWorkers    int
	LayoutWorkers int
	ExcelWorkers  int
	Languages     string
	PSM           int
	Extractor     string
	LLMURL        string
	LLMModel      string
	LLMKey        string
	LLMTimeout    time.Duration
	Schema        string
	OutDir        string // set by the command (serve: DataDir/workbooks; process: -o)
}

// stageNames maps the short names of -stages to stages.
var stageNames = map[string]tracking.Stage{
	"ocr": tracking.StageOCR, "llm": tracking.StageLLM, "layout": tracking.StageLayout,
	"excel": tracking.StageExcel, "summary": tracking.StageSummary,
}

// register adds the stage flags; withStages adds -stages (serve only:
// process must run every stage to finish its batch).
func (s *stageFlags) register(fs *flag.FlagSet, getenv func(string) string, withStages bool) {
	s.Stages = "all"
	if withStages {
		fs.StringVar(&s.Stages, "stages", envDefault(getenv, "DOCPIPE_STAGES", "all"),
			"stages this process runs: all, none (API only) or a list of ocr,llm,layout,excel,summary (env DOCPIPE_STAGES)")
	}
	fs.IntVar(&s.OCRWorkers, "ocr-workers", envInt(getenv, "DOCPIPE_OCR_WORKERS", runtime.NumCPU()), "OCR workers, one Tesseract engine each (env DOCPIPE_OCR_WORKERS)")
	fs.IntVar(&s.LLMWorkers, "llm-workers", envInt(getenv, "DOCPIPE_LLM_WORKERS", 4), "extraction workers (env DOCPIPE_LLM_WORKERS)")
	fs.IntVar(&s.LayoutWorkers, "layout-workers", envInt(getenv, "DOCPIPE_LAYOUT_WORKERS", 2), "layout workers (env DOCPIPE_LAYOUT_WORKERS)")
	fs.IntVar(&s.ExcelWorkers, "excel-workers", envInt(getenv, "DOCPIPE_EXCEL_WORKERS", 2), "Excel workers (env DOCPIPE_EXCEL_WORKERS)")
	fs.StringVar(&s.Languages, "languages", envDefault(getenv, "DOCPIPE_LANGUAGES", "eng"), "Tesseract languages, e.g. eng, kor, eng+kor (env DOCPIPE_LANGUAGES)")
	fs.IntVar(&s.PSM, "psm", envInt(getenv, "DOCPIPE_PSM", 0), "Tesseract page segmentation mode; 0: the OCR stage's default (env DOCPIPE_PSM)")
	fs.StringVar(&s.Extractor, "extractor", envDefault(getenv, "DOCPIPE_EXTRACTOR", extract.ExtractorBuiltin), "field extractor: builtin or llm (env DOCPIPE_EXTRACTOR)")
	fs.StringVar(&s.LLMURL, "llm-url", getenv("DOCPIPE_LLM_URL"), "OpenAI-compatible endpoint, e.g. http://localhost:8080/v1 (env DOCPIPE_LLM_URL)")
	fs.StringVar(&s.LLMModel, "llm-model", getenv("DOCPIPE_LLM_MODEL"), "model name for the LLM endpoint (env DOCPIPE_LLM_MODEL)")
	s.LLMKey = getenv("DOCPIPE_LLM_API_KEY") // not a flag: keys stay out of process listings
	fs.DurationVar(&s.LLMTimeout, "llm-timeout", envDuration(getenv, "DOCPIPE_LLM_TIMEOUT", extract.DefaultLLMTimeout), "timeout of one LLM call (env DOCPIPE_LLM_TIMEOUT)")
	fs.StringVar(&s.Schema, "schema", getenv("DOCPIPE_SCHEMA"), "JSON file of the fields to extract; empty: the built-in receipt/invoice schema (env DOCPIPE_SCHEMA)")
}

// selected returns the stages this process runs.
func (s *stageFlags) selected() (map[tracking.Stage]bool, error) {
	out := map[tracking.Stage]bool{}
	switch strings.TrimSpace(s.Stages) {
	case "all", "":
		for _, st := range stageNames {
			out[st] = true
		}
		return out, nil
	case "none":
		return out, nil
	}
	for _, name := range strings.Split(s.Stages, ",") {
		st, ok := stageNames[strings.TrimSpace(name)]
		if !ok {
			return nil, fmt.Errorf("%w: -stages: unknown stage %q (want ocr, llm, layout, excel, summary, all or none)", errUsage, name)
		}
		out[st] = true
	}
	return out, nil
}

// build makes the engine's stage configurations; close releases the OCR
// engines.
func (s *stageFlags) build(log *slog.Logger) (cfgs []pipeline.StageConfig, closeAll func(), err error) {
	want, err := s.selected()
	if err != nil {
		return nil, nil, err
	}
	var closers []func() error
	closeAll = func() {
		for _, c := range closers {
			if err := c(); err != nil {
				log.Warn("closing stage", "err", err)
			}
		}
	}
	if s.OCRWorkers <= 0 || s.LLMWorkers <= 0 || s.LayoutWorkers <= 0 || s.ExcelWorkers <= 0 {
		return nil, nil, fmt.Errorf("%w: worker counts must be positive", errUsage)
	}
	if want[tracking.StageOCR] {
		st := ocr.NewStage(ocr.StageOptions{Workers: s.OCRWorkers, Client: ocr.Options{Languages: s.Languages, PSM: s.PSM}})
		closers = append(closers, st.Close)
		cfgs = append(cfgs, pipeline.StageConfig{Stage: tracking.StageOCR, Run: st, Workers: s.OCRWorkers, Timeout: 10 * time.Minute})
	}
	if want[tracking.StageLLM] {
		ec := extract.StageConfig{Extractor: s.Extractor}
		if s.LLMURL != "" {
			ec.LLM = &extract.Config{URL: s.LLMURL, Model: s.LLMModel, APIKey: s.LLMKey, Timeout: s.LLMTimeout}
		} else if s.Extractor == extract.ExtractorLLM {
			return nil, nil, fmt.Errorf("%w: -extractor llm needs -llm-url (DOCPIPE_LLM_URL)", errUsage)
		}
		if s.Schema != "" {
			sc, err := extract.LoadSchema(s.Schema)
			if err != nil {
				return nil, nil, err
			}
			ec.Schema = sc
		}
		st, err := extract.NewStage(ec)
		if err != nil {
			return nil, nil, err
		}
		cfgs = append(cfgs, pipeline.StageConfig{Stage: tracking.StageLLM, Run: st, Workers: s.LLMWorkers, Timeout: 10 * time.Minute})
	}
	if want[tracking.StageLayout] {
		cfgs = append(cfgs, pipeline.StageConfig{Stage: tracking.StageLayout, Run: layout.NewStage(layout.Options{}), Workers: s.LayoutWorkers, Timeout: 5 * time.Minute})
	}
	if want[tracking.StageExcel] || want[tracking.StageSummary] {
		if s.OutDir == "" {
			return nil, nil, errors.New("no output directory for workbooks")
		}
		more, err := excelStages(s, want)
		if err != nil {
			return nil, nil, err
		}
		cfgs = append(cfgs, more...)
	}
	return cfgs, closeAll, nil
}

// excelStages makes the per-document Excel stage and the batch summary.
func excelStages(s *stageFlags, want map[tracking.Stage]bool) ([]pipeline.StageConfig, error) {
	var cfgs []pipeline.StageConfig
	if want[tracking.StageExcel] {
		st, err := excel.NewStage(excel.Options{OutDir: s.OutDir})
		if err != nil {
			return nil, err
		}
		cfgs = append(cfgs, pipeline.StageConfig{Stage: tracking.StageExcel, Run: st, Workers: s.ExcelWorkers, Timeout: 5 * time.Minute})
	}
	if want[tracking.StageSummary] {
		st, err := excel.NewSummaryStage(excel.Options{OutDir: s.OutDir})
		if err != nil {
			return nil, err
		}
		cfgs = append(cfgs, pipeline.StageConfig{Stage: tracking.StageSummary, Run: st, Workers: 1, Timeout: 30 * time.Minute})
	}
	return cfgs, nil
}
