package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// xlsxType is the media type of an Excel workbook.
const xlsxType = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

// resultPath returns the string under key of a final_result JSON object,
// or "" when there is none.
func resultPath(finalResult json.RawMessage, key string) string {
	if len(finalResult) == 0 {
		return ""
	}
	var m map[string]any
	if err := json.Unmarshal(finalResult, &m); err != nil {
		return ""
	}
	s, _ := m[key].(string)
	return s
}

// underDataDir returns p relative to the data directory, or false when p
// is not an absolute path inside it.
func (a *api) underDataDir(p string) (string, bool) {
	if !filepath.IsAbs(p) {
		return "", false
	}
	rel, err := filepath.Rel(a.dataDir, filepath.Clean(p))
	if err != nil || rel == "." || !filepath.IsLocal(rel) {
		return "", false
	}
	return rel, true
}

// serveDataFile serves the file at path p, which must lie inside the data
// directory: it is opened through an os.Root, so neither ".." nor a
// symlink can lead outside it. Anything else is 404, so that the API
// never reveals or serves arbitrary server files. contentType "" means:
// by extension, and as an attachment unless it is an image or a PDF.
func (a *api) serveDataFile(w http.ResponseWriter, r *http.Request, p, contentType, downloadName, what string) {
	rel, ok := a.underDataDir(p)
	if !ok {
		if p != "" {
			a.log.WarnContext(r.Context(), "refusing to serve a file outside the data directory",
				"request_id", requestID(r.Context()), "path", p)
		}
		a.writeError(w, r, notFoundError("%s not found", what))
		return
	}
	root, err := os.OpenRoot(a.dataDir)
	if err != nil {
		a.writeError(w, r, fmt.Errorf("open data dir: %w", err))
		return
	}
	defer root.Close()
	f, err := root.Open(rel)
	if err != nil {
		// Missing, unreadable, or a symlink out of the data directory:
		// all the same to the client.
		if !errors.Is(err, fs.ErrNotExist) {
			a.log.WarnContext(r.Context(), "cannot open file to serve",
				"request_id", requestID(r.Context()), "path", p, "err", err)
		}
		a.writeError(w, r, notFoundError("%s not found", what))
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		a.writeError(w, r, fmt.Errorf("stat %s: %w", what, err))
		return
	}
	if !st.Mode().IsRegular() {
		a.writeError(w, r, notFoundError("%s not found", what))
		return
	}
	inline := false
	if contentType == "" {
		// Images and PDFs show inline; anything else (an upload named
		// page.html, an SVG with scripts) is an opaque download, so that
		// a browser never renders it as a page of ours.
		contentType = mime.TypeByExtension(strings.ToLower(filepath.Ext(rel)))
		inline = strings.HasPrefix(contentType, "image/") && !strings.HasPrefix(contentType, "image/svg") ||
			contentType == "application/pdf"
		if !inline {
			contentType = "application/octet-stream"
		}
	}
	if downloadName == "" {
		downloadName = filepath.Base(rel)
	}
	disposition := "attachment"
	if inline {
		disposition = "inline"
	}
	h := w.Header()
	h.Set("Content-Type", contentType)
	cd := mime.FormatMediaType(disposition, map[string]string{"filename": downloadName})
	if cd == "" {
		cd = disposition
	}
	h.Set("Content-Disposition", cd)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	http.ServeContent(w, r, downloadName, st.ModTime(), f)
}
