package tracking

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Listener delivers docpipe's notifications from other processes on one
// dedicated connection, reconnecting when the database goes away.
type Listener struct {
	store *Store
	log   *slog.Logger
}

// NewListener returns a Listener on the store's database.
func NewListener(s *Store, log *slog.Logger) *Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Listener{store: s, log: log.With("component", "listener")}
}

// Listen runs until ctx ends, calling wake for every WakeChannel
// notification from another Store (this process wakes its own stages
// directly) and revoke for every RevokeChannel one. Each time LISTEN takes
// effect (at start and after a reconnect) it calls wake("") — every stage —
// since notifications sent before then were not heard. It returns nil when
// ctx ends.
func (l *Listener) Listen(ctx context.Context, wake func(Stage), revoke func([]int64)) error {
	failures := 0
	for ctx.Err() == nil {
		err := l.listenOnce(ctx, wake, revoke, &failures)
		if ctx.Err() != nil {
			return nil
		}
		failures++
		d := RetryDelay(failures)
		l.log.Warn("notification connection lost; reconnecting", "err", err, "in", d)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
	return nil
}

func (l *Listener) listenOnce(ctx context.Context, wake func(Stage), revoke func([]int64), failures *int) error {
	pc, err := l.store.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire: %w", err)
	}
	// The connection carries LISTEN state: never return it to the pool.
	conn := pc.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+WakeChannel+"; LISTEN "+RevokeChannel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	*failures = 0
	wake("") // catch up on whatever was notified before LISTEN took effect
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		switch n.Channel {
		case WakeChannel:
			st, origin := ParseWake(n.Payload)
			if origin != l.store.origin {
				wake(st)
			}
		case RevokeChannel:
			revoke(ParseRevoked(n.Payload))
		}
	}
}
