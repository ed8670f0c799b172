package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"
)

// RequestIDHeader carries a request's id: honoured when a client or proxy
// sends a sane one, generated otherwise, and echoed in every answer.
const RequestIDHeader = "X-Request-Id"

type ctxKey struct{}

// requestID returns the id the middleware gave the request, or "".
func requestID(ctx context.Context) string {
	id, _ := ctx.Value(ctxKey{}).(string)
	return id
}

// validRequestID accepts ids of 1 to 128 visible ASCII characters, so that
// a client cannot inject into logs or headers.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// recorder remembers the status and size of an answer.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (rw *recorder) WriteHeader(code int) {
	if rw.status == 0 {
		rw.status = code
	}
	rw.ResponseWriter.WriteHeader(code)
}

func (rw *recorder) Write(p []byte) (int, error) {
	if rw.status == 0 {
		rw.status = http.StatusOK
	}
	n, err := rw.ResponseWriter.Write(p)
	rw.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (rw *recorder) Unwrap() http.ResponseWriter { return rw.ResponseWriter }

// middleware gives each request an id, recovers panics as 500 JSON, logs
// one access line and counts the request per route pattern.
func (a *api) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get(RequestIDHeader)
		if !validRequestID(id) {
			id = newRequestID()
		}
		w.Header().Set(RequestIDHeader, id)
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, id))
		rw := &recorder{ResponseWriter: w}

		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p) // the server's own way to abort a response
				}
				a.log.LogAttrs(r.Context(), slog.LevelError, "handler panicked",
					slog.String("request_id", id), slog.String("panic", fmt.Sprint(p)),
					slog.String("stack", string(debug.Stack())))
				if rw.status == 0 {
					a.writeError(rw, r, fmt.Errorf("panic: %v", p))
				}
			}
			// r.Pattern is set by the ServeMux on this very request.
			route := r.Pattern
			if route == "" {
				route = "unmatched"
			}
			status := rw.status
			if status == 0 {
				status = http.StatusOK
			}
			took := time.Since(start)
			a.log.LogAttrs(r.Context(), slog.LevelInfo, "http request",
				slog.String("method", r.Method), slog.String("route", route),
				slog.String("path", r.URL.Path), slog.Int("status", status),
				slog.Int64("bytes", rw.bytes), slog.Duration("duration", took),
				slog.String("request_id", id))
			if a.metrics != nil {
				a.metrics.HTTPRequest(route, status, took)
			}
		}()
		next.ServeHTTP(rw, r)
	})
}
