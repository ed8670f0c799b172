package ocr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/tracking"
)

// StageOptions configure a Stage.
type StageOptions struct {
	// Workers is how many pages may be recognised at once: the number of
	// Tesseract engines the stage keeps, one per worker goroutine of the
	// runner. Default 1.
	Workers int
	// Client is the configuration of every engine; a batch's options
	// ("languages", "psm", "dpi") override it per job.
	Client Options
}

// JobOptions are the keys of a batch's pipeline options the OCR stage
// reads. Zero fields keep the stage's configuration.
type JobOptions struct {
	Languages Languages `json:"languages"`
	PSM       int       `json:"psm"`
	DPI       int       `json:"dpi"`
}

// Languages is a "+"-joined list of Tesseract languages; in JSON it may be
// a string ("eng+kor") or an array (["eng","kor"]).
type Languages string

// UnmarshalJSON accepts a string or an array of strings.
func (l *Languages) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*l = Languages(s)
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("languages: want a string or an array of strings: %w", err)
	}
	*l = Languages(strings.Join(list, "+"))
	return nil
}

// Summary is the small JSON result the stage stores for a task; the boxes
// go to ocr_text_boxes through pipeline.Output.OCR.
type Summary struct {
	Pages          int     `json:"pages"`
	Words          int     `json:"words"`
	Lines          int     `json:"lines"`
	MeanConfidence float64 `json:"mean_confidence"` // over words, 0–1
	Width          int     `json:"width"`
	Height         int     `json:"height"`
	Languages      string  `json:"languages"`
	PSM            int     `json:"psm"`
}

// Stage is the pipeline.ocr_stage: it OCRs a chain's image with a pool of
// Clients, one per worker, created when first needed.
type Stage struct {
	opts Options
	pool chan *Client // Workers slots; a nil slot has no client yet

	mu     sync.Mutex
	closed bool
}

var _ pipeline.Stage = (*Stage)(nil)

// NewStage returns a Stage. Options are validated on use: a bad
// configuration fails every job permanently with the reason.
func NewStage(opts StageOptions) *Stage {
	n := max(opts.Workers, 1)
	s := &Stage{opts: opts.Client, pool: make(chan *Client, n)}
	for range n {
		s.pool <- nil
	}
	return s
}

// Run OCRs job.Input.ImagePath. It waits for a free engine (or ctx),
// re-creating that engine when the job's languages differ from its own.
// Bad input and bad options are permanent errors.
func (s *Stage) Run(ctx context.Context, job *pipeline.Job) (*pipeline.Output, error) {
	var jo JobOptions
	if err := job.Options(&jo); err != nil {
		return nil, fmt.Errorf("ocr options: %w", err)
	}
	want := s.opts
	if jo.Languages != "" {
		want.Languages = string(jo.Languages)
	}
	if jo.PSM != 0 {
		want.PSM = jo.PSM
	}
	if jo.DPI != 0 {
		want.DPI = jo.DPI
	}
	want, err := want.withDefaults()
	if err != nil {
		return nil, tracking.Permanent(err)
	}
	if job.Input.ImagePath == "" {
		return nil, tracking.Permanent(errors.New("ocr: job has no image_path"))
	}

	c, err := s.acquire(ctx, want)
	if err != nil {
		return nil, err
	}
	res, err := c.Recognize(ctx, job.Input.ImagePath)
	s.release(c)
	if err != nil {
		return nil, err
	}
	res.ChainID = job.ChainID
	res.PublicPath = job.Input.PublicURL
	return &pipeline.Output{Result: Summarize(res, want), OCR: res}, nil
}

// acquire takes a pool slot and returns a client configured as want.
func (s *Stage) acquire(ctx context.Context, want Options) (*Client, error) {
	var c *Client
	select {
	case c = <-s.pool:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		s.release(c)
		return nil, errors.New("ocr stage closed")
	}
	if c != nil && c.opts == want {
		return c, nil
	}
	if c != nil && c.opts.Languages == want.Languages {
		// Same language data: only Tesseract variables change.
		c.reconfigure(want)
		return c, nil
	}
	if c != nil {
		c.Close()
	}
	c, err := NewClient(want)
	if err != nil {
		s.release(nil)
		return nil, tracking.Permanent(err)
	}
	return c, nil
}

// release returns a slot to the pool, closing its client if the stage has
// been closed meanwhile (the empty slot still goes back, to wake waiters).
func (s *Stage) release(c *Client) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed && c != nil {
		c.Close()
		c = nil
	}
	s.pool <- c
}

// Close closes every idle client and marks the stage closed; clients in
// use are closed when their job returns. It is idempotent.
func (s *Stage) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var idle int
	for drained := false; !drained; {
		select {
		case c := <-s.pool:
			if c != nil {
				c.Close()
			}
			idle++
		default:
			drained = true
		}
	}
	for range idle { // keep the slots, so waiters wake and see closed
		s.pool <- nil
	}
	return nil
}

// Summarize makes the stage's task result from an OCR result.
func Summarize(res *tracking.OCRResult, opts Options) Summary {
	s := Summary{Pages: res.Pages, Width: res.Width, Height: res.Height, Languages: opts.Languages, PSM: opts.PSM}
	var conf float64
	for _, b := range res.Boxes {
		switch b.Level {
		case tracking.LevelWord:
			s.Words++
			conf += b.Confidence
		case tracking.LevelLine:
			s.Lines++
		}
	}
	if s.Words > 0 {
		s.MeanConfidence = confidence(conf / float64(s.Words) * 100)
	}
	return s
}
