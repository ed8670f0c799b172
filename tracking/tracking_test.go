package tracking_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/docpipe/docpipe/tracking"
)

func TestTransitions(t *testing.T) {
	const (
		P = tracking.StatusPending
		S = tracking.StatusStarted
		R = tracking.StatusRunning
		Y = tracking.StatusRetry
		K = tracking.StatusSuccess
		F = tracking.StatusFailure
		V = tracking.StatusRevoked
	)
	allowed := map[[2]tracking.Status]bool{
		{P, S}: true, {P, V}: true,
		{S, R}: true, {S, K}: true, {S, F}: true, {S, Y}: true, {S, V}: true, {S, P}: true,
		{R, R}: true, {R, K}: true, {R, F}: true, {R, Y}: true, {R, V}: true, {R, P}: true,
		{Y, S}: true, {Y, V}: true,
	}
	for _, from := range tracking.Statuses {
		for _, to := range tracking.Statuses {
			t.Run(fmt.Sprintf("%s->%s", from, to), func(t *testing.T) {
				if got := tracking.CanTransition(from, to); got != allowed[[2]tracking.Status{from, to}] {
					t.Fatalf("CanTransition = %v", got)
				}
				if from.Terminal() && tracking.CanTransition(from, to) {
					t.Fatal("a terminal status moved")
				}
			})
		}
	}
}

func TestStatusValues(t *testing.T) {
	tests := []struct {
		s               tracking.Status
		valid, terminal bool
	}{
		{"PENDING", true, false}, {"STARTED", true, false}, {"RUNNING", true, false}, {"RETRY", true, false},
		{"SUCCESS", true, true}, {"FAILURE", true, true}, {"REVOKED", true, true},
		{"pending", false, false}, {"", false, false}, {"DONE", false, false},
	}
	for _, tt := range tests {
		if tt.s.Valid() != tt.valid || tt.s.Terminal() != tt.terminal {
			t.Errorf("%q: valid %v terminal %v, want %v %v", tt.s, tt.s.Valid(), tt.s.Terminal(), tt.valid, tt.terminal)
		}
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		attempt  int
		min, max time.Duration
	}{
		{0, 800 * time.Millisecond, 1200 * time.Millisecond},
		{1, 800 * time.Millisecond, 1200 * time.Millisecond},
		{2, 1600 * time.Millisecond, 2400 * time.Millisecond},
		{4, 6400 * time.Millisecond, 9600 * time.Millisecond},
		{20, 8 * time.Minute, 12 * time.Minute}, // capped at 10 min ± 20%
	}
	for _, tt := range tests {
		for range 100 {
			if d := tracking.Backoff(tt.attempt); d < tt.min || d > tt.max {
				t.Fatalf("Backoff(%d) = %s, want within [%s, %s]", tt.attempt, d, tt.min, tt.max)
			}
		}
	}
}

func TestPermanent(t *testing.T) {
	base := errors.New("bad input")
	if tracking.Permanent(nil) != nil {
		t.Fatal("Permanent(nil) != nil")
	}
	wrapped := fmt.Errorf("stage: %w", tracking.Permanent(base))
	if !tracking.IsPermanent(wrapped) || !errors.Is(wrapped, base) || tracking.IsPermanent(base) {
		t.Fatal("permanence not carried through wrapping")
	}
}

func TestNewIDIsTimeOrderedUUIDv7(t *testing.T) {
	seen := map[string]bool{}
	prev := ""
	for i := range 1000 {
		id := tracking.NewID()
		if len(id) != 36 || id[14] != '7' || id[8] != '-' || !strings.ContainsRune("89ab", rune(id[19])) || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		if i%100 == 0 {
			time.Sleep(2 * time.Millisecond) // the next one is in a later millisecond
			if prev != "" && id[:13] < prev[:13] {
				t.Fatalf("id %q sorts before the earlier %q", id, prev)
			}
			prev = id
		}
		seen[id] = true
	}
}

// TestStoresHaveDistinctOrigins: two stores made at the same moment (two
// processes starting together) must not take each other's wake-ups for
// their own.
func TestStoresHaveDistinctOrigins(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		st, origin := tracking.ParseWake(tracking.WakePayloadForTest(tracking.NewStore(nil, tracking.StoreOptions{}), tracking.StageOCR))
		if st != tracking.StageOCR || origin == "" || seen[origin] {
			t.Fatalf("stage %q origin %q (seen before: %v)", st, origin, seen[origin])
		}
		seen[origin] = true
	}
}

func TestRetryDelay(t *testing.T) {
	tests := []struct {
		failures int
		want     time.Duration
	}{{0, 100 * time.Millisecond}, {1, 100 * time.Millisecond}, {2, 200 * time.Millisecond}, {6, 3200 * time.Millisecond}, {7, 5 * time.Second}, {100, 5 * time.Second}}
	for _, tt := range tests {
		if got := tracking.RetryDelay(tt.failures); got != tt.want {
			t.Errorf("RetryDelay(%d) = %s, want %s", tt.failures, got, tt.want)
		}
	}
}
