package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/docpipe/docpipe/tracking"
)

// clientError is an error of the request itself, found by a handler
// (a bad parameter, an unsupported media type); its message is for the
// client.
type clientError struct {
	status int
	msg    string
}

func (e *clientError) Error() string { return e.msg }

// badRequest returns a 400 clientError with a formatted message.
func badRequest(format string, args ...any) error {
	return &clientError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// forbidden returns a 403 clientError.
func forbidden(format string, args ...any) error {
	return &clientError{http.StatusForbidden, fmt.Sprintf(format, args...)}
}

// notFoundError returns a 404 clientError.
func notFoundError(format string, args ...any) error {
	return &clientError{http.StatusNotFound, fmt.Sprintf(format, args...)}
}

// errorStatus is the one place that maps errors to HTTP statuses. It
// returns the status and the message the client may see: the message of
// errors about the request, and a generic text for everything else.
func errorStatus(err error) (int, string) {
	var ce *clientError
	var ve *tracking.ValidationError
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &ce):
		return ce.status, ce.msg
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", tooBig.Limit)
	case errors.As(err, &ve):
		return http.StatusBadRequest, ve.Msg
	case errors.Is(err, tracking.ErrNotFound):
		return http.StatusNotFound, err.Error()
	case errors.Is(err, tracking.ErrConflict):
		return http.StatusConflict, err.Error()
	default:
		return http.StatusInternalServerError, "internal server error"
	}
}

// errorBody is the JSON of every error answer.
type errorBody struct {
	Error     string `json:"error"`
	RequestID string `json:"request_id"`
}

// writeError answers err as JSON with the status errorStatus gives it.
// Internal errors are logged with the request id and never shown.
func (a *api) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := errorStatus(err)
	id := requestID(r.Context())
	if status >= 500 {
		a.log.LogAttrs(r.Context(), slog.LevelError, "request failed",
			slog.String("request_id", id), slog.String("method", r.Method),
			slog.String("path", r.URL.Path), slog.Any("err", err))
	}
	writeJSON(w, status, errorBody{Error: msg, RequestID: id})
}

// writeJSON answers v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own types are encoded; this is a programming error.
		status = http.StatusInternalServerError
		b = []byte(`{"error":"internal server error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
