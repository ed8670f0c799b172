package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/docpipe/docpipe/tracking"
)

// cancelJSON is the optional body of the cancel routes.
type cancelJSON struct {
	Reason string `json:"reason"`
}

// maxReasonLen bounds a cancel reason (it ends up in error_message).
const maxReasonLen = 500

// cancelReason reads the optional {"reason": "..."} body of a cancel request.
func cancelReason(w http.ResponseWriter, r *http.Request) (string, error) {
	body := http.MaxBytesReader(w, r.Body, 64<<10)
	var in cancelJSON
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil && !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return "", err
		}
		return "", badRequest("body must be empty or {\"reason\": \"...\"}: %v", err)
	}
	reason := strings.TrimSpace(in.Reason)
	if len(reason) > maxReasonLen {
		return "", badRequest("reason is at most %d bytes", maxReasonLen)
	}
	if reason == "" {
		reason = "cancelled through the API"
	}
	return reason, nil
}

// revokeJSON answers a cancel.
type revokeJSON struct {
	BatchID       string          `json:"batch_id,omitempty"`
	ChainID       string          `json:"chain_id,omitempty"`
	Status        tracking.Status `json:"status"`
	RevokedChains int             `json:"revoked_chains"`
	RevokedTasks  int             `json:"revoked_tasks"`
}

// cancelChain serves POST /chains/{chain_id}/cancel: 404 unknown, 409 ended.
func (a *api) cancelChain(w http.ResponseWriter, r *http.Request) {
	reason, err := cancelReason(w, r)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	id := r.PathValue("chain_id")
	res, err := a.store.RevokeChain(r.Context(), id, reason)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, revokeJSON{ChainID: id, Status: tracking.StatusRevoked,
		RevokedChains: res.Chains, RevokedTasks: res.Tasks})
}

// ocrJSON is an OCR result whose boxes are always a list.
type ocrJSON struct {
	*tracking.OCRResult
	Boxes []tracking.TextBox `json:"boxes"`
}

// chainOCR serves GET /chains/{chain_id}/ocr: the OCR execution with its
// boxes in reading order; 404 when the chain has none (yet).
func (a *api) chainOCR(w http.ResponseWriter, r *http.Request) {
	res, err := a.store.OCRResult(r.Context(), r.PathValue("chain_id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := ocrJSON{OCRResult: res, Boxes: res.Boxes}
	if out.Boxes == nil {
		out.Boxes = []tracking.TextBox{}
	}
	writeJSON(w, http.StatusOK, out)
}

// chainWorkbook serves GET /chains/{chain_id}/workbook: the xlsx named by
// the chain's final_result "workbook" key, if it lies in the data directory.
func (a *api) chainWorkbook(w http.ResponseWriter, r *http.Request) {
	c, err := a.store.Chain(r.Context(), r.PathValue("chain_id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	p := resultPath(c.FinalResult, "workbook")
	if p == "" {
		a.writeError(w, r, notFoundError("chain %s has no workbook (status %s)", c.ChainID, c.Status))
		return
	}
	name := filepath.Base(p)
	var in tracking.ChainInput
	if json.Unmarshal(c.InputData, &in) == nil && in.FileName != "" {
		name = strings.TrimSuffix(sanitizeFileName(in.FileName), filepath.Ext(in.FileName)) + ".xlsx"
	}
	a.serveDataFile(w, r, p, xlsxType, name, "workbook")
}

// chainImage serves GET /chains/{chain_id}/image: the chain's input image,
// only when it lies in the data directory (an upload); images submitted
// by server path are never served.
func (a *api) chainImage(w http.ResponseWriter, r *http.Request) {
	c, err := a.store.Chain(r.Context(), r.PathValue("chain_id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	var in tracking.ChainInput
	if err := json.Unmarshal(c.InputData, &in); err != nil {
		a.writeError(w, r, notFoundError("chain %s has no image", c.ChainID))
		return
	}
	a.serveDataFile(w, r, in.ImagePath, "", sanitizeFileName(in.FileName), "image")
}
