package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// ChainLookup says which chain ids exist; *tracking.Store has it.
type ChainLookup interface {
	KnownChains(ctx context.Context, ids []string) (map[string]bool, error)
}

// SweepUploads removes the upload directories (dataDir/uploads/<chain_id>)
// of chains that were never stored — the process died between storing a
// submission's files and creating its batch — once they are older than
// minAge (so that a submission in progress is never touched). It returns
// how many it removed. Directories of stored chains are kept.
func SweepUploads(ctx context.Context, dataDir string, chains ChainLookup, minAge time.Duration) (int, error) {
	root := filepath.Join(dataDir, "uploads")
	entries, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("sweep uploads: %w", err)
	}
	cutoff := time.Now().Add(-minAge)
	var old []string
	for _, e := range entries {
		if !e.IsDir() || !looksLikeID(e.Name()) {
			continue
		}
		info, err := e.Info()
		if err != nil || info.ModTime().After(cutoff) {
			continue
		}
		old = append(old, e.Name())
	}
	removed := 0
	for len(old) > 0 {
		n := min(len(old), 1000)
		known, err := chains.KnownChains(ctx, old[:n])
		if err != nil {
			return removed, fmt.Errorf("sweep uploads: %w", err)
		}
		for _, id := range old[:n] {
			if known[id] {
				continue
			}
			if err := os.RemoveAll(filepath.Join(root, id)); err != nil {
				return removed, fmt.Errorf("sweep uploads: %w", err)
			}
			removed++
		}
		old = old[n:]
	}
	return removed, nil
}

// looksLikeID reports whether name has the shape of the UUIDs docpipe
// names upload directories after: anything else is not its to remove.
func looksLikeID(name string) bool {
	if len(name) != 36 {
		return false
	}
	for i, c := range name {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f':
		default:
			return false
		}
	}
	return true
}
