package layout

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/tracking"
)

// memReader is a pipeline.Reader over OCR results held in memory.
type memReader struct {
	ocr map[string]*tracking.OCRResult
	err error
}

func (r *memReader) StageResult(context.Context, int64, tracking.Stage) (json.RawMessage, error) {
	return nil, tracking.ErrNotFound
}

func (r *memReader) OCRResult(_ context.Context, chainID string) (*tracking.OCRResult, error) {
	if r.err != nil {
		return nil, r.err
	}
	res, ok := r.ocr[chainID]
	if !ok {
		return nil, tracking.ErrNotFound
	}
	return res, nil
}

func (r *memReader) BatchChains(context.Context, string, func(*tracking.Chain) error) error {
	return nil
}

func TestStage(t *testing.T) {
	t.Parallel()
	_, boxes := receipt().render(t)
	boxes = append(boxes, tracking.TextBox{ID: 999, Text: "ACME MARKET", BBox: tracking.Rect(0, 0, 1, 1), Level: tracking.LevelLine})
	reader := &memReader{ocr: map[string]*tracking.OCRResult{
		"ok":     {ChainID: "ok", Status: tracking.OCRSuccess, Boxes: boxes},
		"failed": {ChainID: "failed", Status: tracking.OCRFailed, Error: "unreadable image"},
	}}
	tests := []struct {
		name      string
		chainID   string
		reader    pipeline.Reader
		permanent bool
		wantErr   bool
	}{
		{name: "ok", chainID: "ok", reader: reader},
		{name: "no OCR result", chainID: "missing", reader: reader, wantErr: true, permanent: true},
		{name: "failed OCR", chainID: "failed", reader: reader, wantErr: true, permanent: true},
		{name: "no chain", chainID: "", reader: reader, wantErr: true, permanent: true},
		{name: "read error is retried", chainID: "ok", reader: &memReader{err: errors.New("connection reset")}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := NewStage(Options{}).Run(t.Context(), &pipeline.Job{ChainID: tt.chainID, Reader: tt.reader})
			if (err != nil) != tt.wantErr || tracking.IsPermanent(err) != tt.permanent {
				t.Fatalf("err = %v (permanent %v), want error %v permanent %v", err, tracking.IsPermanent(err), tt.wantErr, tt.permanent)
			}
			if err != nil {
				return
			}
			// The result goes through JSON as the engine stores it.
			raw, err := json.Marshal(out.Result)
			if err != nil {
				t.Fatal(err)
			}
			var l Layout
			if err := json.Unmarshal(raw, &l); err != nil {
				t.Fatal(err)
			}
			if len(l.Tables) != 1 || !reflect.DeepEqual(l.Tables[0].Grid(), receipt().grid()) {
				t.Errorf("tables = %+v", l.Tables)
			}
			if l.Words != len(boxes)-1 {
				t.Errorf("words = %d, want %d (the line box is not a word)", l.Words, len(boxes)-1)
			}
		})
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := NewStage(Options{}).Run(ctx, &pipeline.Job{ChainID: "ok", Reader: reader}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled run: err = %v, want context.Canceled", err)
	}
}
