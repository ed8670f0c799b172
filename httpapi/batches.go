package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/docpipe/docpipe/tracking"
)

// batchJSON is a batch as the REST API shows it: the stored row, its
// progress percentage ((completed_images + failed_images) / total_images
// * 100) and, depending on the route, its chain ids or its chains.
type batchJSON struct {
	*tracking.Batch
	Progress float64          `json:"progress"`
	ChainIDs []string         `json:"chain_ids,omitempty"`
	Chains   []batchChainJSON `json:"chains,omitempty"`
}

// batchChainJSON is one chain in a batch's answer.
type batchChainJSON struct {
	ChainID      string          `json:"chain_id"`
	Status       tracking.Status `json:"status"`
	FileName     string          `json:"file_name"`
	ErrorMessage string          `json:"error_message"`
}

// submitJSON is the application/json body of POST /batches.
type submitJSON struct {
	BatchName   string          `json:"batch_name"`
	ChunkSize   int             `json:"chunk_size"`
	Options     json.RawMessage `json:"options"`
	Images      []string        `json:"images"`
	InitiatedBy string          `json:"initiated_by"`
}

// maxJSONBytes bounds a JSON submission (about 50,000 server paths).
const maxJSONBytes = 8 << 20

// submitBatch serves POST /batches: multipart uploads or JSON server paths.
func (a *api) submitBatch(w http.ResponseWriter, r *http.Request) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		mt = ""
	}
	var b *tracking.Batch
	var ids []string
	switch mt {
	case "multipart/form-data":
		b, ids, err = a.submitUpload(w, r)
	case "application/json":
		b, ids, err = a.submitPaths(w, r)
	default:
		err = &clientError{http.StatusUnsupportedMediaType,
			"Content-Type must be multipart/form-data (files) or application/json (server paths)"}
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if a.wake != nil {
		a.wake(a.firstStage)
	}
	a.log.InfoContext(r.Context(), "batch submitted", "request_id", requestID(r.Context()),
		"batch_id", b.BatchID, "images", b.TotalImages)
	w.Header().Set("Location", "/batches/"+url.PathEscape(b.BatchID))
	writeJSON(w, http.StatusCreated, batchJSON{Batch: b, Progress: b.Progress(), ChainIDs: ids})
}

// submitPaths submits images already on the server, by absolute path.
func (a *api) submitPaths(w http.ResponseWriter, r *http.Request) (_ *tracking.Batch, _ []string, err error) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBytes))
	dec.DisallowUnknownFields()
	var in submitJSON
	if err := dec.Decode(&in); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, nil, err
		}
		return nil, nil, badRequest("invalid JSON body: %v", err)
	}
	if dec.More() {
		return nil, nil, badRequest("invalid JSON body: more than one value")
	}
	if len(in.Images) == 0 {
		return nil, nil, badRequest("images is empty: a batch needs at least one image")
	}
	if len(in.Images) > a.maxFiles {
		return nil, nil, badRequest("a batch holds at most %d images, got %d", a.maxFiles, len(in.Images))
	}
	if err := checkBatchFields(in.ChunkSize, in.Options); err != nil {
		return nil, nil, err
	}
	if len(a.inputDirs) == 0 {
		return nil, nil, forbidden("submitting server paths is disabled: upload the files, or start the daemon with -input-dirs naming the directories clients may submit from")
	}
	seen := make(map[string]bool, len(in.Images))
	chains := make([]tracking.NewChain, len(in.Images))
	ids := make([]string, len(in.Images))
	real := make([]string, len(in.Images)) // symbolic links resolved
	for i, p := range in.Images {
		r, err := a.checkServerPath(p)
		if err != nil {
			return nil, nil, err
		}
		if seen[r] {
			return nil, nil, badRequest("image %q is listed twice", p)
		}
		seen[r], real[i] = true, r
	}
	// Each chain gets its own copy (a hard link when the file system
	// allows) under the uploads tree, as an upload would: the same file may
	// be submitted in many batches, and every OCR execution needs its own
	// image_path; later changes to the original do not change the input.
	defer func() {
		if err != nil {
			for _, c := range chains {
				if c.Input.ImagePath != "" {
					_ = os.RemoveAll(filepath.Dir(c.Input.ImagePath))
				}
			}
		}
	}()
	for i, p := range in.Images {
		ids[i] = tracking.NewID()
		chains[i] = tracking.NewChain{ChainID: ids[i]}
		stored, err := a.storeServerFile(ids[i], real[i], filepath.Base(filepath.Clean(p)))
		if stored != "" {
			chains[i].Input = tracking.ChainInput{ImagePath: stored, FileName: filepath.Base(p), PublicURL: imageURL(ids[i])}
		}
		if err != nil {
			return nil, nil, err
		}
	}
	b, err := a.store.CreateBatch(r.Context(), tracking.NewBatch{
		Name:        in.BatchName,
		InitiatedBy: in.InitiatedBy,
		ChunkSize:   in.ChunkSize,
		Options:     in.Options,
		OnFinish:    tracking.StageSummary,
		Chains:      chains,
	})
	if err != nil {
		return nil, nil, err
	}
	return b, ids, nil
}

// checkServerPath accepts absolute paths of existing regular files inside
// the input directories, once symbolic links are resolved, and returns the
// resolved path (the one to read: a link swapped afterwards is not
// followed again).
func (a *api) checkServerPath(p string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", badRequest("image %q is not an absolute path", p)
	}
	if len(p) > maxPathBytes {
		return "", badRequest("image path %q is longer than %d bytes", p, maxPathBytes)
	}
	real, err := filepath.EvalSymlinks(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", badRequest("image %q does not exist", p)
	case err != nil:
		return "", badRequest("image %q cannot be read", p)
	}
	if !slices.ContainsFunc(a.inputDirs, func(dir string) bool { return within(dir, real) }) {
		return "", forbidden("image %q is outside the directories server paths may be submitted from", p)
	}
	st, err := os.Stat(real)
	switch {
	case err != nil:
		return "", badRequest("image %q cannot be read", p)
	case !st.Mode().IsRegular():
		return "", badRequest("image %q is not a regular file", p)
	}
	return real, nil
}

// within reports whether path lies inside dir (both absolute and clean).
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}

// checkBatchFields validates the fields both submission forms share.
func checkBatchFields(chunkSize int, options json.RawMessage) error {
	if chunkSize < 0 {
		return badRequest("chunk_size must be a positive integer, got %d", chunkSize)
	}
	if len(options) > 0 {
		o := bytes.TrimSpace(options)
		if !json.Valid(o) || (o[0] != '{' && string(o) != "null") {
			return badRequest("options must be a JSON object")
		}
	}
	return nil
}

// imageURL is where a client fetches a chain's uploaded image.
func imageURL(chainID string) string {
	return "/chains/" + url.PathEscape(chainID) + "/image"
}

// listBatches serves GET /batches?status=&name=&limit=&offset=, newest first.
func (a *api) listBatches(w http.ResponseWriter, r *http.Request) {
	limit, offset, err := pageParams(r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	status := tracking.Status(strings.ToUpper(q.Get("status")))
	if status != "" && !status.Valid() {
		a.writeError(w, r, badRequest("unknown status %q", q.Get("status")))
		return
	}
	batches, err := a.store.ListBatches(r.Context(), tracking.BatchFilter{
		Status: status, Name: q.Get("name"), Limit: limit, Offset: offset,
	})
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := make([]batchJSON, len(batches))
	for i := range batches {
		out[i] = batchJSON{Batch: &batches[i], Progress: batches[i].Progress()}
	}
	writeJSON(w, http.StatusOK, out)
}

// getBatch serves GET /batches/{batch_id}: the batch and its chains.
func (a *api) getBatch(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("batch_id")
	b, err := a.store.Batch(r.Context(), id)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	chains := make([]batchChainJSON, 0, b.TotalImages)
	err = a.store.BatchChains(r.Context(), id, func(c *tracking.Chain) error {
		var in tracking.ChainInput
		_ = json.Unmarshal(c.InputData, &in) // a row without input still lists
		chains = append(chains, batchChainJSON{ChainID: c.ChainID, Status: c.Status,
			FileName: in.FileName, ErrorMessage: c.ErrorMessage})
		return nil
	})
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, batchJSON{Batch: b, Progress: b.Progress(), Chains: chains})
}

// cancelBatch serves POST /batches/{batch_id}/cancel: 404 unknown, 409 ended.
func (a *api) cancelBatch(w http.ResponseWriter, r *http.Request) {
	reason, err := cancelReason(w, r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	id := r.PathValue("batch_id")
	res, err := a.store.RevokeBatch(r.Context(), id, reason)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, revokeJSON{BatchID: id, Status: tracking.StatusRevoked,
		RevokedChains: res.Chains, RevokedTasks: res.Tasks})
}

// batchSummary serves GET /batches/{batch_id}/summary: the workbook named
// by the batch's final_result "summary_workbook" key.
func (a *api) batchSummary(w http.ResponseWriter, r *http.Request) {
	b, err := a.store.Batch(r.Context(), r.PathValue("batch_id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	p := resultPath(b.FinalResult, "summary_workbook")
	if p == "" {
		a.writeError(w, r, notFoundError("batch %s has no summary workbook (status %s)", b.BatchID, b.Status))
		return
	}
	name := b.BatchName
	if name == "" {
		name = b.BatchID
	}
	a.serveDataFile(w, r, p, xlsxType, fmt.Sprintf("%s-summary.xlsx", sanitizeFileName(name)), "summary workbook")
}
