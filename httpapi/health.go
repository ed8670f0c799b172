package httpapi

import (
	"context"
	"net/http"
	"time"
)

// readyTimeout bounds a readiness check.
const readyTimeout = 2 * time.Second

type healthJSON struct {
	Status    string `json:"status"`
	Error     string `json:"error,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

// healthz serves GET /healthz: the process is alive. Always 200.
func (a *api) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, healthJSON{Status: "ok"})
}

// readyz serves GET /readyz: 200 when Ready answers within 2 s, else 503.
// The cause is logged, not shown.
func (a *api) readyz(w http.ResponseWriter, r *http.Request) {
	if a.ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := a.ready(ctx); err != nil {
			id := requestID(r.Context())
			a.log.WarnContext(r.Context(), "not ready", "request_id", id, "err", err)
			writeJSON(w, http.StatusServiceUnavailable, healthJSON{Status: "unavailable", Error: "not ready", RequestID: id})
			return
		}
	}
	writeJSON(w, http.StatusOK, healthJSON{Status: "ok"})
}
