package tracking_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/docpipe/docpipe/tracking"
	"github.com/docpipe/docpipe/tracking/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func images(n int) []tracking.NewChain {
	out := make([]tracking.NewChain, n)
	for i := range out {
		out[i].Input.ImagePath = "/img/" + tracking.NewID() + ".png"
	}
	return out
}

func TestSmokeLifecycle(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.New(t)
	s := tracking.NewStore(pool, tracking.StoreOptions{})
	b, err := s.CreateBatch(ctx, tracking.NewBatch{Name: "smoke", ChunkSize: 2, Chains: images(3), OnFinish: tracking.StageSummary})
	if err != nil {
		t.Fatal(err)
	}
	if b.TotalImages != 3 || b.TotalChunks != 2 || b.Status != tracking.StatusPending {
		t.Fatalf("batch %+v", b)
	}
	for _, st := range tracking.DocumentStages {
		cl, err := s.Claim(ctx, st, "me", 10, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		want := 3
		if st == tracking.StageExcel {
			want = 2
		}
		if len(cl) != want {
			t.Fatalf("%s: claimed %d", st, len(cl))
		}
		var outs []tracking.Outcome
		for i := range cl {
			o := tracking.Outcome{Task: &cl[i], Result: json.RawMessage(`{"ok":true}`)}
			if st == tracking.StageOCR {
				o.OCR = &tracking.OCRResult{ChainID: cl[i].ChainID, ImagePath: cl[i].ChainID, Boxes: []tracking.TextBox{{Text: "a", Confidence: 0.5, BBox: tracking.Rect(1, 2, 3, 4)}}}
			}
			if st == tracking.StageLayout && i == 0 {
				o.Err = tracking.Permanent(errors.New("bad"))
			}
			outs = append(outs, o)
		}
		res, err := s.Complete(ctx, outs)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %+v", st, res)
	}
	b, _ = s.Batch(ctx, b.BatchID)
	t.Logf("batch %+v", b)
	if b.Status != tracking.StatusFailure || b.CompletedImages != 2 || b.FailedImages != 1 || b.CompletedChunks+b.FailedChunks != 2 {
		t.Fatalf("batch %+v", b)
	}
	cl, err := s.Claim(ctx, tracking.StageSummary, "me", 10, time.Minute)
	if err != nil || len(cl) != 1 || cl[0].BatchID != b.BatchID {
		t.Fatalf("summary claim %v %+v", err, cl)
	}
	if _, err := s.Complete(ctx, []tracking.Outcome{{Task: &cl[0], Result: json.RawMessage(`{"summary":"x"}`)}}); err != nil {
		t.Fatal(err)
	}
	b, _ = s.Batch(ctx, b.BatchID)
	if string(b.FinalResult) != `{"summary": "x"}` {
		t.Fatalf("final %s", b.FinalResult)
	}
	h, err := s.History(ctx, 10, 0)
	if err != nil || len(h) != 3 {
		t.Fatal(err, len(h))
	}
	c, err := s.Chain(ctx, h[0].ChainID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("chain %+v", c)
	o, err := s.OCRResult(ctx, c.ChainID)
	if err != nil || len(o.Boxes) != 1 {
		t.Fatal(err)
	}
}

func TestIsTransient(t *testing.T) {
	ctx := context.Background()
	// A connection that really went away: closed, then used.
	conn, err := pgx.Connect(ctx, pgtest.NewDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Close(ctx); err != nil {
		t.Fatal(err)
	}
	_, closedErr := conn.Exec(ctx, "SELECT 1")
	// A real refused dial.
	_, refusedErr := net.Dial("tcp", "127.0.0.1:1")

	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"closed connection", closedErr, true},
		{"refused dial", fmt.Errorf("claim: %w", refusedErr), true},
		{"unexpected EOF", fmt.Errorf("commit: %w", io.ErrUnexpectedEOF), true},
		{"reset", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, true},
		{"broken pipe", fmt.Errorf("write: %w", syscall.EPIPE), true},
		{"socket gone", fmt.Errorf("dial unix /tmp/.s.PGSQL.5432: %w", syscall.ENOENT), true},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, true},
		{"connection failure", &pgconn.PgError{Code: "08006"}, true},
		{"deadlock", fmt.Errorf("revoke: %w", &pgconn.PgError{Code: "40P01"}), true},
		{"too many connections", &pgconn.PgError{Code: "53300"}, true},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"syntax error", &pgconn.PgError{Code: "42601"}, false},
		{"cancelled", context.Canceled, false},
		{"a message that merely mentions a broken pipe", errors.New("stage failed: broken pipe in the scanner"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "closed connection" || tt.name == "refused dial" {
				if tt.err == nil {
					t.Fatal("expected an error from the real operation")
				}
			}
			if got := tracking.IsTransient(tt.err); got != tt.want {
				t.Errorf("IsTransient(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
