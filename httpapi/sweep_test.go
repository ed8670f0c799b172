package httpapi_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/docpipe/docpipe/httpapi"
	"github.com/docpipe/docpipe/tracking"
)

func TestSweepUploads(t *testing.T) {
	ctx := context.Background()
	store := newStore(t)
	dataDir := t.TempDir()
	stored, err := store.CreateChain(ctx, tracking.NewBatch{Chains: []tracking.NewChain{{ChainID: tracking.NewID(),
		Input: tracking.ChainInput{ImagePath: "/x.png"}}}})
	if err != nil {
		t.Fatal(err)
	}
	long := time.Now().Add(-2 * time.Hour)
	dirs := []struct {
		name string
		at   time.Time
		kept bool
	}{
		{stored.ChainID, long, true},         // a stored chain's upload
		{tracking.NewID(), long, false},      // orphaned by a crash long ago
		{tracking.NewID(), time.Now(), true}, // a submission that may be in progress
		{"not-a-chain-id", long, true},       // not docpipe's
	}
	for _, d := range dirs {
		p := filepath.Join(dataDir, "uploads", d.name)
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "a.png"), []byte("png"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, d.at, d.at); err != nil {
			t.Fatal(err)
		}
	}
	n, err := httpapi.SweepUploads(ctx, dataDir, store, time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("removed %d, %v; want 1", n, err)
	}
	for _, d := range dirs {
		_, err := os.Stat(filepath.Join(dataDir, "uploads", d.name))
		if kept := err == nil; kept != d.kept {
			t.Errorf("%s: kept %v, want %v", d.name, kept, d.kept)
		}
	}
	// No uploads directory at all is not an error.
	if n, err := httpapi.SweepUploads(ctx, t.TempDir(), store, time.Hour); err != nil || n != 0 {
		t.Errorf("empty data dir: %d, %v", n, err)
	}
}
