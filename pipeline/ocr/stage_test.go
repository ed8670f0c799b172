package ocr

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/docpipe/docpipe/pipeline"
	"github.com/docpipe/docpipe/tracking"
)

// newStage returns a Stage closed at the end of the test.
func newStage(t testing.TB, opts StageOptions) *Stage {
	t.Helper()
	s := NewStage(opts)
	t.Cleanup(func() { s.Close() })
	return s
}

// job makes a job for path with raw JSON options.
func job(path, options string) *pipeline.Job {
	j := &pipeline.Job{TaskID: "t1", Stage: tracking.StageOCR, ChainID: "chain-1", Attempt: 1,
		Input: tracking.ChainInput{ImagePath: path, PublicURL: "/files/x.png"}}
	if options != "" {
		j.Input.Options = json.RawMessage(options)
	}
	return j
}

func TestStageRun(t *testing.T) {
	good := goodImage(t)
	s := newStage(t, StageOptions{Workers: 2})
	tests := []struct {
		name     string
		options  string
		wantLang string
		wantPSM  int
	}{
		{"defaults", "", "eng", DefaultPSM},
		{"null options", "null", "eng", DefaultPSM},
		{"psm and dpi", `{"psm": 3, "dpi": 200, "other": true}`, "eng", 3},
		{"languages string", `{"languages": "eng+kor"}`, "eng+kor", DefaultPSM},
		{"languages array", `{"languages": ["eng", "kor"], "psm": 4}`, "eng+kor", 4},
		{"back to defaults", `{}`, "eng", DefaultPSM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := s.Run(context.Background(), job(good, tt.options))
			if err != nil {
				t.Fatal(err)
			}
			res := out.OCR
			if res.ChainID != "chain-1" || res.ImagePath != good || res.PublicPath != "/files/x.png" || res.Status != tracking.OCRSuccess {
				t.Errorf("result ids = %q %q %q %q", res.ChainID, res.ImagePath, res.PublicPath, res.Status)
			}
			sum, ok := out.Result.(Summary)
			if !ok {
				t.Fatalf("Result is %T", out.Result)
			}
			want := Summary{Pages: 1, Words: 3, Lines: 1, Width: 700, Height: 120, Languages: tt.wantLang, PSM: tt.wantPSM}
			got := sum
			got.MeanConfidence = 0
			if got != want {
				t.Errorf("summary = %+v, want %+v", sum, want)
			}
			if sum.MeanConfidence < 0.8 || sum.MeanConfidence > 1 {
				t.Errorf("mean confidence %v", sum.MeanConfidence)
			}
			if _, err := json.Marshal(out.Result); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestStageErrors(t *testing.T) {
	s := newStage(t, StageOptions{Workers: 1})
	tests := []struct {
		name string
		job  *pipeline.Job
	}{
		{"bad options JSON", job(goodImage(t), `{"psm": "six"}`)},
		{"bad psm", job(goodImage(t), `{"psm": 2}`)},
		{"bad languages", job(goodImage(t), `{"languages": "../../etc"}`)},
		{"no image path", job("", "")},
		{"bad image", job(writeFile(t, "x.png", []byte("hello")), "")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Run(context.Background(), tt.job)
			if !tracking.IsPermanent(err) {
				t.Errorf("err = %v, want permanent", err)
			}
		})
	}
	// The slot survived every failure.
	if _, err := s.Run(context.Background(), job(goodImage(t), "")); err != nil {
		t.Fatal(err)
	}
}

func TestStageConcurrent(t *testing.T) {
	good := goodImage(t)
	s := newStage(t, StageOptions{Workers: 2})
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			opts := ""
			if i%2 == 1 {
				opts = `{"psm": 4}`
			}
			_, err := s.Run(context.Background(), job(good, opts))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestStageClose(t *testing.T) {
	good := goodImage(t)
	s := NewStage(StageOptions{Workers: 1})
	if _, err := s.Run(context.Background(), job(good, "")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s.Close()
	if _, err := s.Run(context.Background(), job(good, "")); err == nil {
		t.Error("Run after Close succeeded")
	}

	t.Run("waits for a slot with ctx", func(t *testing.T) {
		s := newStage(t, StageOptions{Workers: 1})
		c, err := s.acquire(context.Background(), s.opts.mustDefaults(t))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := s.Run(ctx, job(good, "")); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want deadline exceeded", err)
		}
		s.release(c)
	})
}

// mustDefaults is withDefaults for tests.
func (o Options) mustDefaults(t testing.TB) Options {
	t.Helper()
	o, err := o.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestStageReconfigure(t *testing.T) {
	img, _ := render(t, goFace(t), 900, 260, []textLine{{40, 80, "First line"}, {40, 200, "Second line"}})
	path := writeFile(t, "two-lines.png", pngBytes(t, img))
	s := newStage(t, StageOptions{Workers: 1}) // one engine, switched between jobs
	for _, tt := range []struct {
		options string
		lines   int
	}{{"", 2}, {`{"psm": 7}`, 1}, {"", 2}, {`{"languages": "kor+eng", "psm": 7}`, 1}, {"", 2}} {
		out, err := s.Run(context.Background(), job(path, tt.options))
		if err != nil {
			t.Fatal(err)
		}
		if got := out.Result.(Summary).Lines; got != tt.lines {
			t.Errorf("options %s: %d lines, want %d", tt.options, got, tt.lines)
		}
	}
}

func TestStageRate(t *testing.T) {
	good := goodImage(t)
	before := runtime.NumGoroutine()
	s := newStage(t, StageOptions{Workers: 2})
	rate, err := StageRate(context.Background(), s, []string{good, good, good}, 2)
	if err != nil || rate.PerSecond() <= 0 || rate.Images != 3 {
		t.Errorf("StageRate = %v, %v", rate, err)
	}
	bad := writeFile(t, "bad.png", []byte("not an image"))
	if _, err := StageRate(context.Background(), s, []string{good, bad, good, good, good}, 2); !tracking.IsPermanent(err) {
		t.Errorf("StageRate with a bad image: err = %v, want the permanent error", err)
	}
	// Every worker goroutine has ended.
	for i := 0; runtime.NumGoroutine() > before; i++ {
		if i == 100 {
			t.Fatalf("%d goroutines left, %d before", runtime.NumGoroutine(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
