package extract

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/tracking"
)

// Extractor names, as used in StageConfig.Extractor and in a batch's
// options ({"extractor": "llm"}).
const (
	ExtractorBuiltin = "builtin"
	ExtractorLLM     = "llm"
)

// Result is the task result of pipeline.llm_stage, stored as JSON and read
// by the Excel and summary stages:
//
//	{
//	  "extractor": "builtin",            // or "llm"
//	  "schema": "receipt",               // the Schema's name
//	  "order": ["company", "date", ...], // the schema's field order
//	  "fields": {
//	    "company": {"value": "UNIHAKKA INTERNATIONAL SDN BHD", "raw": "...", "confidence": 0.87, "box_ids": [4, 5, 6, 7]},
//	    "date":    {"value": "2018-03-18", "raw": "18 Mar 2018", "confidence": 0.8, "box_ids": [9, 10, 11]},
//	    "total":   {"value": "8.60", "raw": "$8.60", "confidence": 0.9, "box_ids": [58]},
//	    "tax":     {"value": "", "confidence": 0, "box_ids": []}
//	  },
//	  "pairs": [{"key": "Invoice #", "value": "OR18031802170364", "confidence": 0.9, "box_ids": [21, 22, 23]}]
//	}
//
// Every schema field is present in "fields"; a field that was not found
// has an empty "value" and confidence 0. Values are normalised (see Field);
// box_ids are ocr_text_boxes ids of the chain's OCR execution.
type Result struct {
	Extractor string           `json:"extractor"`
	Schema    string           `json:"schema"`
	Order     []string         `json:"order"`
	Fields    map[string]Field `json:"fields"`
	Pairs     []Pair           `json:"pairs"`
}

// Options are the per-batch options the stage reads from the batch's
// pipeline options JSON. Unknown keys are ignored.
type Options struct {
	// Extractor is "builtin" or "llm"; empty means StageConfig.Extractor.
	Extractor string `json:"extractor,omitempty"`
	// Schema names one of StageConfig.Schemas; empty means StageConfig.Schema.
	Schema string `json:"schema,omitempty"`
}

// StageConfig configures the stage. Its zero value runs the built-in
// extractor with the default schema.
type StageConfig struct {
	// Extractor is the default extractor: "builtin" (when empty) or "llm".
	Extractor string
	// LLM is the chat-completions endpoint; it is needed only when the llm
	// extractor is chosen (by Extractor or a batch's options).
	LLM *Config
	// Schema is the default schema (DefaultSchema when nil).
	Schema *Schema
	// Schemas are the schemas a batch may pick by name ({"schema": "..."}),
	// e.g. one per workflow, loaded with LoadSchema.
	Schemas map[string]*Schema
}

// Stage is pipeline.llm_stage: it reads the chain's OCR result, runs the
// chosen Extractor and returns a *Result.
type Stage struct {
	cfg     StageConfig
	builtin Extractor
	llm     Extractor // nil when no LLM is configured
}

var _ pipeline.Stage = (*Stage)(nil)

// NewStage checks cfg and makes the stage.
func NewStage(cfg StageConfig) (*Stage, error) {
	if cfg.Schema == nil {
		cfg.Schema = DefaultSchema()
	}
	s := &Stage{cfg: cfg, builtin: Builtin{}}
	if cfg.LLM != nil {
		llm, err := NewLLM(*cfg.LLM)
		if err != nil {
			return nil, fmt.Errorf("extract stage: %w", err)
		}
		s.llm = llm
	}
	switch cfg.Extractor {
	case "", ExtractorBuiltin:
	case ExtractorLLM:
		if s.llm == nil {
			return nil, errors.New("extract stage: extractor llm needs an LLM config (URL and model)")
		}
	default:
		return nil, fmt.Errorf("extract stage: unknown extractor %q (want builtin or llm)", cfg.Extractor)
	}
	for name, sc := range cfg.Schemas {
		if sc == nil {
			return nil, fmt.Errorf("extract stage: schema %q is nil", name)
		}
	}
	return s, nil
}

// Run implements pipeline.Stage. A missing or failed OCR result, bad
// options and an unknown schema or extractor are permanent errors;
// extractor errors are passed on as they are (the LLM's are retryable or
// permanent as LLM.Extract says).
func (s *Stage) Run(ctx context.Context, job *pipeline.Job) (*pipeline.Output, error) {
	var opts Options
	if err := job.Options(&opts); err != nil {
		return nil, fmt.Errorf("extract: options: %w", err)
	}
	name, ex, err := s.pick(opts.Extractor)
	if err != nil {
		return nil, tracking.Permanent(fmt.Errorf("extract: %w", err))
	}
	schema := s.cfg.Schema
	if opts.Schema != "" {
		sc, ok := s.cfg.Schemas[opts.Schema]
		if !ok {
			return nil, tracking.Permanent(fmt.Errorf("extract: unknown schema %q (known: %v)", opts.Schema, s.schemaNames()))
		}
		schema = sc
	}
	if job.Reader == nil {
		return nil, tracking.Permanent(errors.New("extract: job has no reader"))
	}
	ocr, err := job.Reader.OCRResult(ctx, job.ChainID)
	switch {
	case errors.Is(err, tracking.ErrNotFound):
		return nil, tracking.Permanent(fmt.Errorf("extract: no OCR result for chain %s: %w", job.ChainID, err))
	case err != nil:
		return nil, fmt.Errorf("extract: read OCR of chain %s: %w", job.ChainID, err)
	case ocr.Status == tracking.OCRFailed:
		return nil, tracking.Permanent(fmt.Errorf("extract: OCR of chain %s failed: %s", job.ChainID, ocr.Error))
	}
	doc := NewDocument(ocr, schema)
	fields, err := ex.Extract(ctx, doc)
	if err != nil {
		return nil, fmt.Errorf("extract %s: %w", name, err)
	}
	if job.Logger != nil {
		found := 0
		for _, f := range fields.Fields {
			if f.Value != "" {
				found++
			}
		}
		job.Logger.DebugContext(ctx, "fields extracted", "extractor", name, "schema", schema.Name, "found", found, "of", len(schema.Fields), "pairs", len(fields.Pairs))
	}
	return &pipeline.Output{Result: NewResult(name, schema, fields)}, nil
}

// pick chooses the extractor: the batch's option, else the configured one.
func (s *Stage) pick(opt string) (string, Extractor, error) {
	name := opt
	if name == "" {
		name = s.cfg.Extractor
	}
	switch name {
	case "", ExtractorBuiltin:
		return ExtractorBuiltin, s.builtin, nil
	case ExtractorLLM:
		if s.llm == nil {
			return "", nil, errors.New("extractor llm was asked for but no LLM endpoint is configured")
		}
		return ExtractorLLM, s.llm, nil
	}
	return "", nil, fmt.Errorf("unknown extractor %q (want builtin or llm)", name)
}

func (s *Stage) schemaNames() []string {
	names := make([]string, 0, len(s.cfg.Schemas))
	for n := range s.cfg.Schemas {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// NewResult makes the stage's Result of an extraction: every schema field
// present, in the schema's order.
func NewResult(extractor string, schema *Schema, f *Fields) *Result {
	if f == nil {
		f = &Fields{}
	}
	f.complete(schema)
	r := &Result{Extractor: extractor, Fields: f.Fields, Pairs: slices.Clone(f.Pairs)}
	if schema != nil {
		r.Schema = schema.Name
		for _, sf := range schema.Fields {
			r.Order = append(r.Order, sf.Name)
		}
	}
	if r.Order == nil {
		r.Order = []string{}
	}
	return r
}
