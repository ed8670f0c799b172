package tracking

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Store is docpipe's PostgreSQL storage: every SQL statement docpipe runs
// is a method here. It is safe for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	now    func() time.Time
	origin string // tags this Store's wake-ups so its own Listener can skip them
}

// StoreOptions configures a Store. The zero value is ready to use.
type StoreOptions struct {
	// Now is the clock used for every timestamp the Store writes and
	// compares (leases, run_after, started_at). Tests move it instead of
	// sleeping. Default time.Now.
	Now func() time.Time
}

// NewStore returns a Store over pool.
func NewStore(pool *pgxpool.Pool, opts StoreOptions) *Store {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	// The origin must differ between processes: the random tail of an id,
	// not its head (a UUIDv7 starts with the time).
	return &Store{pool: pool, now: now, origin: NewID()[24:]}
}

// Pool returns the pool the Store runs on.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Now returns the Store's clock reading.
func (s *Store) Now() time.Time { return s.now() }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping database: %w", err)
	}
	return nil
}

// NewID returns a new UUID, version 7: 48 bits of Unix milliseconds, then
// random bits. Ids made later sort later, so the indexes on task_id and
// chain_id grow at their right edge instead of splitting random pages.
func NewID() string {
	// The random bits come from the runtime's ChaCha8 generator (seeded
	// from the OS per process): unpredictable enough for ids, and no
	// system call per id, which crypto/rand costs.
	var b [16]byte
	binary.LittleEndian.PutUint64(b[0:8], rand.Uint64()) // bytes 0-5 are overwritten by the time
	binary.LittleEndian.PutUint64(b[8:16], rand.Uint64())
	ms := uint64(time.Now().UnixMilli())
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	b[6] = b[6]&0x0f | 0x70
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}

// Backoff returns how long a task waits before its next attempt after
// failing attempt number attempt (1-based): exponential from 1 s, capped
// at 10 min, with ±20% jitter so that failures that happened together do
// not retry together.
func Backoff(attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := time.Second << min(attempt-1, 10)
	d = min(d, 10*time.Minute)
	jitter := 0.8 + 0.4*rand.Float64()
	return time.Duration(float64(d) * jitter)
}

// RetryDelay is how long to wait before trying a database operation again
// after failures consecutive failures: 100 ms, doubling, at most 5 s.
func RetryDelay(failures int) time.Duration {
	return min(100*time.Millisecond<<min(max(failures, 1)-1, 6), 5*time.Second)
}

// IsTransient reports whether err is a failure of the connection or the
// server (not of the statement), after which the same work may succeed
// once the database is back.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "08", // connection exception
			"53", // insufficient resources
			"57": // operator intervention (admin shutdown, crash shutdown, cannot connect now)
			return true
		case "40": // serialization failure, deadlock: the transaction may be re-run
			return true
		}
		return false
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return true
	}
	return isConnLost(err)
}

// isConnLost reports whether err says the connection went away mid-query
// (the server restarted, a network hiccup): a closed connection, a reset or
// broken pipe, an unexpected EOF, a refused or timed-out network call.
func isConnLost(err error) bool {
	var netErr net.Error // *net.OpError: refused, reset, timeouts
	if errors.As(err, &netErr) {
		return true
	}
	for _, target := range []error{pgconn.ErrConnClosed, net.ErrClosed, io.ErrUnexpectedEOF, io.EOF,
		syscall.ECONNRESET, syscall.ECONNABORTED, syscall.EPIPE, syscall.ECONNREFUSED, syscall.ENOENT} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// notFound turns pgx.ErrNoRows into ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// cut on a rune boundary
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
