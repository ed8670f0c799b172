package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/docpipe/docpipe/tracking"
)

// The JSON of the two routes the old clients use. Their keys are a
// contract (SPEC.md): add none, drop none. Empty error texts are null, as
// the old design's NULL columns were.

type chainStatusJSON struct {
	ChainID        string          `json:"chain_id"`
	ChainName      string          `json:"chain_name"`
	Status         tracking.Status `json:"status"`
	Progress       float64         `json:"progress"` // completed_tasks / total_tasks, 0..1
	TotalTasks     int             `json:"total_tasks"`
	CompletedTasks int             `json:"completed_tasks"`
	FailedTasks    int             `json:"failed_tasks"`
	StartedAt      *time.Time      `json:"started_at"`
	FinishedAt     *time.Time      `json:"finished_at"`
	ErrorMessage   *string         `json:"error_message"`
	Tasks          []taskJSON      `json:"tasks"`
}

type taskJSON struct {
	TaskID     string          `json:"task_id"`
	TaskName   tracking.Stage  `json:"task_name"`
	Status     tracking.Status `json:"status"`
	Retries    int             `json:"retries"`
	Error      *string         `json:"error"`
	StartedAt  *time.Time      `json:"started_at"`
	FinishedAt *time.Time      `json:"finished_at"`
}

type historyJSON struct {
	ChainID        string          `json:"chain_id"`
	ChainName      string          `json:"chain_name"`
	Status         tracking.Status `json:"status"`
	CompletedTasks int             `json:"completed_tasks"`
	TotalTasks     int             `json:"total_tasks"`
	StartedAt      *time.Time      `json:"started_at"`
	FinishedAt     *time.Time      `json:"finished_at"`
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// chainStatus serves GET /pipeline/status/{chain_id}.
func (a *api) chainStatus(w http.ResponseWriter, r *http.Request) {
	c, err := a.store.Chain(r.Context(), r.PathValue("chain_id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := chainStatusJSON{
		ChainID:        c.ChainID,
		ChainName:      c.ChainName,
		Status:         c.Status,
		Progress:       c.Progress(),
		TotalTasks:     c.TotalTasks,
		CompletedTasks: c.CompletedTasks,
		FailedTasks:    c.FailedTasks,
		StartedAt:      c.StartedAt,
		FinishedAt:     c.FinishedAt,
		ErrorMessage:   nullString(c.ErrorMessage),
		Tasks:          make([]taskJSON, 0, len(c.Tasks)),
	}
	// The store orders tasks by started_at (not yet started last).
	for _, t := range c.Tasks {
		out.Tasks = append(out.Tasks, taskJSON{
			TaskID:     t.TaskID,
			TaskName:   t.TaskName,
			Status:     t.Status,
			Retries:    t.Retries,
			Error:      nullString(t.Error),
			StartedAt:  t.StartedAt,
			FinishedAt: t.FinishedAt,
		})
	}
	writeJSON(w, http.StatusOK, out)
}

// history serves GET /pipeline/history?limit=&offset=: chains newest first.
func (a *api) history(w http.ResponseWriter, r *http.Request) {
	limit, offset, err := pageParams(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	chains, err := a.store.History(r.Context(), limit, offset)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := make([]historyJSON, len(chains))
	for i, c := range chains {
		out[i] = historyJSON{
			ChainID:        c.ChainID,
			ChainName:      c.ChainName,
			Status:         c.Status,
			CompletedTasks: c.CompletedTasks,
			TotalTasks:     c.TotalTasks,
			StartedAt:      c.StartedAt,
			FinishedAt:     c.FinishedAt,
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// Paging limits of list routes.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

// pageParams reads limit (1..1000, default 100) and offset (>= 0,
// default 0) from the query.
func pageParams(r *http.Request) (limit, offset int, err error) {
	q := r.URL.Query()
	limit, offset = defaultLimit, 0
	if s := q.Get("limit"); s != "" {
		limit, err = strconv.Atoi(s)
		if err != nil || limit < 1 || limit > maxLimit {
			return 0, 0, badRequest("limit must be an integer from 1 to %d, got %q", maxLimit, s)
		}
	}
	if s := q.Get("offset"); s != "" {
		offset, err = strconv.Atoi(s)
		if err != nil || offset < 0 {
			return 0, 0, badRequest("offset must be a non-negative integer, got %q", s)
		}
	}
	return limit, offset, nil
}
