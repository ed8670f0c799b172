package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/docpipe/docpipe/tracking"
)

// maxFieldBytes bounds a non-file form field (options is the largest).
const maxFieldBytes = 64 << 10

// maxFileNameBytes bounds a stored file name (file systems allow 255).
const maxFileNameBytes = 200

// maxPathBytes is the width of ocr_executions.image_path: a longer image
// path could never have its OCR recorded.
const maxPathBytes = 255

// submitUpload submits uploaded images. Each file is stored, before the
// batch is created, at DataDir/uploads/<chain_id>/<sanitized name>; if
// anything fails, every file this request stored is removed again.
func (a *api) submitUpload(w http.ResponseWriter, r *http.Request) (b *tracking.Batch, ids []string, err error) {
	// body remembers a read error, so that a body cut by the size limit in
	// the middle of a part's header is a 413, not a malformed part.
	body := &readErrReader{r: http.MaxBytesReader(w, r.Body, a.maxRequest)}
	r.Body = struct {
		io.Reader
		io.Closer
	}{body, r.Body}
	bodyErr := func(err error) error {
		var tooBig *http.MaxBytesError
		if errors.As(body.err, &tooBig) {
			return body.err
		}
		return multipartError(err)
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, nil, badRequest("invalid multipart body: %v", err)
	}
	var (
		chains               []tracking.NewChain
		name, chunk, options string
		initiatedBy          string
	)
	defer func() {
		if err != nil {
			for _, c := range chains {
				_ = os.RemoveAll(filepath.Dir(c.Input.ImagePath))
			}
		}
	}()
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, bodyErr(err)
		}
		switch field := part.FormName(); field {
		case "files":
			if len(chains) >= a.maxFiles {
				return nil, nil, &clientError{http.StatusRequestEntityTooLarge,
					fmt.Sprintf("a batch holds at most %d images", a.maxFiles)}
			}
			c, err := a.storeUpload(part)
			if c.Input.ImagePath != "" {
				chains = append(chains, c) // stored (maybe partly): removed on failure
			}
			if err != nil {
				var tooBig *http.MaxBytesError
				if errors.As(body.err, &tooBig) {
					return nil, nil, body.err
				}
				return nil, nil, err // a bad file (4xx) or our disk (500)
			}
		case "batch_name", "chunk_size", "options", "initiated_by":
			v, err := readField(part)
			if err != nil {
				return nil, nil, bodyErr(err)
			}
			switch field {
			case "batch_name":
				name = v
			case "chunk_size":
				chunk = v
			case "options":
				options = v
			case "initiated_by":
				initiatedBy = v
			}
		default:
			return nil, nil, badRequest("unexpected form field %q (want files, batch_name, chunk_size, options, initiated_by)", field)
		}
	}
	if len(chains) == 0 {
		return nil, nil, badRequest("no files: a batch needs at least one image (form field \"files\")")
	}
	chunkSize := 0
	if chunk = strings.TrimSpace(chunk); chunk != "" {
		if chunkSize, err = strconv.Atoi(chunk); err != nil || chunkSize < 1 {
			return nil, nil, badRequest("chunk_size must be a positive integer, got %q", chunk)
		}
	}
	var opts json.RawMessage
	if strings.TrimSpace(options) != "" {
		opts = json.RawMessage(options)
	}
	if err := checkBatchFields(chunkSize, opts); err != nil {
		return nil, nil, err
	}
	b, err = a.store.CreateBatch(r.Context(), tracking.NewBatch{
		Name:        name,
		InitiatedBy: initiatedBy,
		ChunkSize:   chunkSize,
		Options:     opts,
		OnFinish:    tracking.StageSummary,
		Chains:      chains,
	})
	if err != nil {
		return nil, nil, err
	}
	ids = make([]string, len(chains))
	for i, c := range chains {
		ids[i] = c.ChainID
	}
	return b, ids, nil
}

// multipartError keeps a body-size error (413) and a clientError as they
// are, and makes any other error reading the body a 400.
func multipartError(err error) error {
	var tooBig *http.MaxBytesError
	var ce *clientError
	if errors.As(err, &tooBig) || errors.As(err, &ce) {
		return err
	}
	return badRequest("invalid multipart body: %v", err)
}

// readField reads a small form field.
func readField(part io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(part, maxFieldBytes+1))
	if err != nil {
		return "", multipartError(err)
	}
	if len(b) > maxFieldBytes {
		return "", badRequest("a form field is larger than %d bytes", maxFieldBytes)
	}
	return string(b), nil
}

// storeUpload writes one uploaded file under a new chain id, atomically
// (a temporary file renamed into place) and size-limited. The returned
// chain's ImagePath is set as soon as its directory exists, even on error,
// so that the caller can remove it.
func (a *api) storeUpload(part *multipart.Part) (tracking.NewChain, error) {
	orig := uploadFileName(part)
	if orig == "" {
		orig = "upload"
	}
	c := tracking.NewChain{ChainID: tracking.NewID()}
	dir := filepath.Join(a.uploadsRoot, c.ChainID)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return c, fmt.Errorf("create upload dir: %w", err)
	}
	// ocr_executions.image_path holds 255 bytes: the name gets what the
	// directory leaves.
	name := fitName(sanitizeFileName(orig), maxPathBytes-len(dir)-1)
	if name == "" || strings.HasPrefix(name, ".") {
		return c, fmt.Errorf("data dir %s is too long for %d-byte image paths", a.dataDir, maxPathBytes)
	}
	dst := filepath.Join(dir, name)
	if filepath.Dir(dst) != dir { // cannot happen with a sanitized name
		return c, badRequest("invalid file name %q", orig)
	}
	c.Input = tracking.ChainInput{ImagePath: dst, FileName: orig, PublicURL: imageURL(c.ChainID)}

	tmp, err := os.CreateTemp(dir, ".upload-*")
	if err != nil {
		return c, fmt.Errorf("create upload file: %w", err)
	}
	defer func() {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name()) // gone already after a successful rename
	}()
	src := &readErrReader{r: io.LimitReader(part, a.maxFile+1)}
	n, err := io.Copy(tmp, src)
	if src.err != nil { // the client's body, not our disk
		return c, multipartError(src.err)
	}
	if err != nil {
		return c, fmt.Errorf("write upload: %w", err)
	}
	if n > a.maxFile {
		return c, &clientError{http.StatusRequestEntityTooLarge,
			fmt.Sprintf("file %q is larger than %d bytes", orig, a.maxFile)}
	}
	if n == 0 {
		return c, badRequest("file %q is empty", orig)
	}
	if err := tmp.Sync(); err != nil {
		return c, fmt.Errorf("write upload: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return c, fmt.Errorf("write upload: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return c, fmt.Errorf("store upload: %w", err)
	}
	if d, err := os.Open(dir); err == nil { // make the rename durable
		_ = d.Sync()
		_ = d.Close()
	}
	return c, nil
}

// readErrReader remembers the error its reader returned (other than EOF),
// to tell a broken request body from a failing disk.
type readErrReader struct {
	r   io.Reader
	err error
}

func (rr *readErrReader) Read(p []byte) (int, error) {
	n, err := rr.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		rr.err = err
	}
	return n, err
}

// uploadFileName returns the name the client gave a part's file: its last
// path element (either slash), as valid UTF-8 of at most 255 bytes. It is
// recorded as the chain's file_name; only its sanitized form touches the
// disk. It is "" when the client gave none.
func uploadFileName(part *multipart.Part) string {
	_, params, err := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
	if err != nil {
		return ""
	}
	name := strings.ReplaceAll(params["filename"], "\\", "/")
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
	}
	name = strings.TrimSpace(strings.ToValidUTF8(name, "\uFFFD"))
	if name == "." || name == ".." {
		return ""
	}
	return fitName(name, 255)
}

// sanitizeFileName turns a client's file name into one safe to create in
// a directory: its last path element (either slash), with only letters,
// digits, '.', '-', '_' kept (others become '_'), no leading dot, at most
// maxFileNameBytes bytes with its extension kept. It is never empty, ".",
// or "..".
func sanitizeFileName(name string) string {
	name = strings.ReplaceAll(name, "\\", "/")
	name = path.Base(name)
	var b strings.Builder
	for _, r := range name {
		switch {
		case r == utf8.RuneError:
			b.WriteByte('_')
		case r == '.' || r == '-' || r == '_':
			b.WriteRune(r)
		case r < unicode.MaxASCII && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'):
			b.WriteRune(r)
		case r > unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)):
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := fitName(strings.TrimLeft(b.String(), "."), maxFileNameBytes)
	if strings.Trim(s, "._-") == "" {
		return "upload"
	}
	return s
}

// fitName shortens a sanitized name to at most n bytes, keeping its
// extension when that is short.
func fitName(s string, n int) string {
	if len(s) <= n {
		return s
	}
	ext := path.Ext(s)
	if len(ext) > 16 || len(ext) >= n {
		ext = ""
	}
	stem := truncateUTF8(s[:len(s)-len(ext)], n-len(ext))
	if stem == "" {
		return truncateUTF8("upload", n)
	}
	return stem + ext
}

// truncateUTF8 cuts s to at most n bytes on a rune boundary.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// storeServerFile links (or, across file systems, copies) the server file
// src to the uploads tree under chainID, named after base. It returns the stored path as soon
// as its directory exists, even on error, so that the caller can remove it.
func (a *api) storeServerFile(chainID, src, base string) (string, error) {
	dir := filepath.Join(a.uploadsRoot, chainID)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("create upload dir: %w", err)
	}
	name := fitName(sanitizeFileName(base), maxPathBytes-len(dir)-1)
	if name == "" || strings.HasPrefix(name, ".") {
		name = "image"
	}
	dst := filepath.Join(dir, name)
	if err := os.Link(src, dst); err == nil {
		return dst, nil
	}
	in, err := os.Open(src)
	if err != nil {
		return dst, badRequest("image %q cannot be read: %v", src, errors.Unwrap(err))
	}
	defer in.Close()
	tmp, err := os.CreateTemp(dir, ".copy-*")
	if err != nil {
		return dst, fmt.Errorf("copy image: %w", err)
	}
	defer func() {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
	}()
	if _, err := io.Copy(tmp, io.LimitReader(in, a.maxFile+1)); err != nil {
		return dst, fmt.Errorf("copy image %s: %w", src, err)
	}
	if err := tmp.Close(); err != nil {
		return dst, fmt.Errorf("copy image %s: %w", src, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return dst, fmt.Errorf("copy image %s: %w", src, err)
	}
	return dst, nil
}
