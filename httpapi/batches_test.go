package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/docpipe/docpipe/httpapi"
	"github.com/docpipe/docpipe/tracking"
)

// tempImage writes a small file and returns its absolute path.
func tempImage(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// inputDirs allows server paths from dirs.
func inputDirs(dirs ...string) func(*httpapi.Options) {
	return func(o *httpapi.Options) { o.InputDirs = dirs }
}

func TestSubmitServerPaths(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, inputDirs(dir))
	a, b := tempImage(t, dir, "a.png", "png a"), tempImage(t, dir, "b.png", "png b")

	rec := e.postJSON(t, "/batches", map[string]any{
		"batch_name": "paths", "chunk_size": 1, "options": map[string]any{"lang": "eng"},
		"images": []string{a, b}, "initiated_by": "tester",
	})
	wantStatus(t, rec, 201)
	m := decode[map[string]any](t, rec)
	batchID, _ := m["batch_id"].(string)
	if batchID == "" || rec.Header().Get("Location") != "/batches/"+batchID {
		t.Fatalf("batch_id %q, Location %q", batchID, rec.Header().Get("Location"))
	}
	if m["batch_name"] != "paths" || m["total_images"] != 2.0 || m["total_chunks"] != 2.0 || m["chunk_size"] != 1.0 ||
		m["initiated_by"] != "tester" || m["status"] != "PENDING" || m["progress"] != 0.0 {
		t.Errorf("batch %v", m)
	}
	ids, _ := m["chain_ids"].([]any)
	if len(ids) != 2 {
		t.Fatalf("chain_ids %v", m["chain_ids"])
	}
	if !slices.Equal(*e.woken, []tracking.Stage{tracking.StageOCR}) {
		t.Errorf("woken %v, want the OCR stage once", *e.woken)
	}

	// Each chain reads its own copy of the file, stored under the uploads
	// tree by chain id, and carries the name and options.
	for i, want := range []string{a, b} {
		id := ids[i].(string)
		c, err := e.store.Chain(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		var in tracking.ChainInput
		if err := json.Unmarshal(c.InputData, &in); err != nil {
			t.Fatal(err)
		}
		if in.ImagePath != filepath.Join(e.dataDir, "uploads", id, filepath.Base(want)) || in.FileName != filepath.Base(want) ||
			!strings.Contains(string(in.Options), `"lang"`) {
			t.Errorf("chain %d input %s", i, c.InputData)
		}
		if got, err := os.ReadFile(in.ImagePath); err != nil || string(got) != "png "+strings.TrimSuffix(filepath.Base(want), ".png") {
			t.Errorf("stored copy %q: %q %v", in.ImagePath, got, err)
		}
	}

	// The same file in a second batch is a new copy: every OCR execution
	// has its own image_path.
	rec2 := e.postJSON(t, "/batches", map[string]any{"images": []string{a}})
	wantStatus(t, rec2, 201)
	id2 := decode[map[string]any](t, rec2)["chain_ids"].([]any)[0].(string)
	c2, err := e.store.Chain(context.Background(), id2)
	if err != nil || !strings.Contains(string(c2.InputData), filepath.Join("uploads", id2)) {
		t.Errorf("second submission input %s, %v", c2.InputData, err)
	}

	// GET /batches/{id} lists them.
	rec = e.do(t, "GET", "/batches/"+batchID, nil)
	wantStatus(t, rec, 200)
	got := decode[map[string]any](t, rec)
	chains, _ := got["chains"].([]any)
	if len(chains) != 2 {
		t.Fatalf("chains %v", got["chains"])
	}
	for i, x := range chains {
		c := x.(map[string]any)
		wantKeys(t, "batch chain", c, "chain_id", "status", "file_name", "error_message")
		if c["chain_id"] != ids[i] || c["file_name"] != filepath.Base([]string{a, b}[i]) || c["status"] != "PENDING" {
			t.Errorf("chain %d: %v", i, c)
		}
	}
	if _, ok := got["progress"].(float64); !ok {
		t.Errorf("progress %#v", got["progress"])
	}
}

func TestSubmitServerPathsInvalid(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, inputDirs(dir))
	img := tempImage(t, dir, "ok.png", "png")
	outsideDir := t.TempDir()
	outside := tempImage(t, outsideDir, "secret.png", "secret")
	link := filepath.Join(dir, "link.png") // inside, pointing outside
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	sibling := dir + "-sibling" // shares the allowed directory's name as a prefix
	if err := os.Mkdir(sibling, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sibling) })
	siblingImg := tempImage(t, sibling, "s.png", "s")
	tests := []struct {
		name string
		body string
		code int
		msg  string // part of the error message
	}{
		{"bad JSON", `{"images": [`, 400, "invalid JSON"},
		{"not an object", `[1,2]`, 400, "invalid JSON"},
		{"unknown field", `{"images": ["` + img + `"], "imagez": []}`, 400, "imagez"},
		{"no images", `{"batch_name": "x"}`, 400, "at least one image"},
		{"empty images", `{"images": []}`, 400, "at least one image"},
		{"relative path", `{"images": ["ok.png"]}`, 400, `"ok.png" is not an absolute path`},
		{"missing file", `{"images": ["` + img + `", "/no/such/file.png"]}`, 400, `"/no/such/file.png" does not exist`},
		{"directory", `{"images": ["` + dir + `"]}`, 400, "not a regular file"},
		{"listed twice", `{"images": ["` + img + `", "` + img + `"]}`, 400, "listed twice"},
		{"chunk_size not a number", `{"images": ["` + img + `"], "chunk_size": "ten"}`, 400, "chunk_size"},
		{"chunk_size negative", `{"images": ["` + img + `"], "chunk_size": -1}`, 400, "chunk_size"},
		{"options not an object", `{"images": ["` + img + `"], "options": "fast"}`, 400, "options"},
		{"name too long", `{"images": ["` + img + `"], "batch_name": "` + strings.Repeat("n", 300) + `"}`, 400, "255"},
		{"path too long", `{"images": ["/` + strings.Repeat("p", 300) + `.png"]}`, 400, "longer than 255 bytes"},
		{"two values", `{"images": ["` + img + `"]} {}`, 400, "more than one"},
		{"outside the input dirs", `{"images": ["` + img + `", "` + outside + `"]}`, 403, "outside the directories"},
		{"symlink out of the input dirs", `{"images": ["` + link + `"]}`, 403, "outside the directories"},
		{"dot-dot out of the input dirs", `{"images": ["` + dir + `/../` + filepath.Base(outsideDir) + `/secret.png"]}`, 403, "outside"},
		{"a sibling with the same prefix", `{"images": ["` + siblingImg + `"]}`, 403, "outside the directories"},
		{"system file", `{"images": ["/etc/passwd"]}`, 403, "outside the directories"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := wantError(t, e.postJSON(t, "/batches", tt.body), tt.code)
			if msg, _ := m["error"].(string); !strings.Contains(msg, tt.msg) {
				t.Errorf("error %q, want it to mention %q", msg, tt.msg)
			}
		})
	}
	t.Run("unsupported media type", func(t *testing.T) {
		wantError(t, e.do(t, "POST", "/batches", strings.NewReader("x"), "Content-Type", "text/plain"), 415)
	})
	t.Run("server paths not enabled", func(t *testing.T) {
		closed := newEnv(t, nil)
		m := wantError(t, closed.postJSON(t, "/batches", `{"images": ["`+img+`"]}`), 403)
		if msg, _ := m["error"].(string); !strings.Contains(msg, "-input-dirs") {
			t.Errorf("error %q, want it to name -input-dirs", msg)
		}
	})
	if len(*e.woken) != 0 {
		t.Errorf("woken %v after failed submissions", *e.woken)
	}
	if bs, _ := e.store.ListBatches(context.Background(), tracking.BatchFilter{}); len(bs) != 0 {
		t.Errorf("%d batches stored after failed submissions", len(bs))
	}
}

// formFile is one part of a multipart body.
type formFile struct {
	field, filename, content string
	file                     bool
}

// multipartBody encodes parts as multipart/form-data.
func multipartBody(t *testing.T, parts ...formFile) (io.Reader, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		var w io.Writer
		var err error
		if p.file {
			w, err = mw.CreateFormFile(p.field, p.filename)
		} else {
			w, err = mw.CreateFormField(p.field)
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, p.content); err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf, mw.FormDataContentType()
}

func file(name, content string) formFile {
	return formFile{field: "files", filename: name, content: content, file: true}
}
func field(name, value string) formFile { return formFile{field: name, content: value} }

// uploads lists the chain directories under DataDir/uploads.
func uploads(t *testing.T, dataDir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dataDir, "uploads"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestSubmitUpload(t *testing.T) {
	e := newEnv(t, nil)
	body, ct := multipartBody(t,
		field("batch_name", "scans"),
		file("invoice 1.png", "first image"),
		file("../../etc/passwd", "second image"),
		field("chunk_size", "5"),
		field("options", `{"lang":"deu"}`),
		file(`..\..\windows\win.ini`, "third image"),
		file(strings.Repeat("long", 70)+".png", "fourth image"),
	)
	rec := e.do(t, "POST", "/batches", body, "Content-Type", ct)
	wantStatus(t, rec, 201)
	m := decode[map[string]any](t, rec)
	if m["batch_name"] != "scans" || m["total_images"] != 4.0 || m["chunk_size"] != 5.0 {
		t.Errorf("batch %v", m)
	}
	ids, _ := m["chain_ids"].([]any)
	if len(ids) != 4 {
		t.Fatalf("chain_ids %v", m["chain_ids"])
	}
	long := filepath.Join(e.dataDir, "uploads", ids[3].(string))
	long = strings.Repeat("long", 70)[:255-len(long)-1-len(".png")] + ".png"
	want := []struct{ stored, original, content string }{
		{"invoice_1.png", "invoice 1.png", "first image"},
		{"passwd", "passwd", "second image"},
		{"win.ini", "win.ini", "third image"},
		// the stored path fits image_path's 255 bytes; the recorded name 255 bytes
		{long, strings.Repeat("long", 70)[:251] + ".png", "fourth image"},
	}
	for i, w := range want {
		id := ids[i].(string)
		p := filepath.Join(e.dataDir, "uploads", id, w.stored)
		b, err := os.ReadFile(p)
		if err != nil || string(b) != w.content {
			t.Errorf("upload %d: %q, %v; want %q at %s", i, b, err, w.content, p)
		}
		entries, _ := os.ReadDir(filepath.Dir(p))
		if len(entries) != 1 {
			t.Errorf("upload %d: %d files in its directory, want 1 (no temp files left)", i, len(entries))
		}
		c, err := e.store.Chain(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		var in tracking.ChainInput
		if err := jsonUnmarshal(c.InputData, &in); err != nil {
			t.Fatal(err)
		}
		if in.ImagePath != p || in.PublicURL != "/chains/"+id+"/image" || in.FileName != w.original || !strings.Contains(string(in.Options), "deu") {
			t.Errorf("upload %d input %+v", i, in)
		}

		// The stored image is served back.
		rec := e.do(t, "GET", "/chains/"+id+"/image", nil)
		wantStatus(t, rec, 200)
		if rec.Body.String() != w.content {
			t.Errorf("image %d body %q", i, rec.Body.String())
		}
	}
	if got := e.do(t, "GET", "/chains/"+ids[0].(string)+"/image", nil).Header().Get("Content-Type"); got != "image/png" {
		t.Errorf("image Content-Type %q", got)
	}
	// Nothing escaped the uploads directory.
	if _, err := os.Stat(filepath.Join(e.dataDir, "etc")); !os.IsNotExist(err) {
		t.Errorf("a file escaped to %s/etc", e.dataDir)
	}
}

func TestSubmitUploadTraversalRawHeader(t *testing.T) {
	// A hand-made part header, so that no client library cleans the name.
	e := newEnv(t, nil)
	body := "--B\r\nContent-Disposition: form-data; name=\"files\"; filename=\"../../../../tmp/evil.png\"\r\n\r\nevil\r\n--B--\r\n"
	rec := e.do(t, "POST", "/batches", strings.NewReader(body), "Content-Type", "multipart/form-data; boundary=B")
	wantStatus(t, rec, 201)
	id := decode[map[string]any](t, rec)["chain_ids"].([]any)[0].(string)
	if b, err := os.ReadFile(filepath.Join(e.dataDir, "uploads", id, "evil.png")); err != nil || string(b) != "evil" {
		t.Errorf("stored %q, %v", b, err)
	}
	c, err := e.store.Chain(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(c.InputData), `"file_name": "evil.png"`) {
		t.Errorf("original name not recorded: %s", c.InputData)
	}
}

func TestSubmitUploadInvalid(t *testing.T) {
	tests := []struct {
		name  string
		parts []formFile
		code  int
		msg   string
	}{
		{"no files", []formFile{field("batch_name", "x")}, 400, "no files"},
		{"empty body", nil, 400, "no files"},
		{"empty file", []formFile{file("a.png", "")}, 400, "empty"},
		{"file too big", []formFile{file("a.png", "ok"), file("big.png", strings.Repeat("x", 1001))}, 413, "larger than 1000 bytes"},
		{"request too big", []formFile{file("a.png", strings.Repeat("x", 1000)), file("b.png", strings.Repeat("x", 1000)), file("c.png", strings.Repeat("x", 1000))}, 413, "larger than 2500 bytes"},
		{"bad chunk_size", []formFile{file("a.png", "ok"), field("chunk_size", "ten")}, 400, "chunk_size"},
		{"zero chunk_size", []formFile{file("a.png", "ok"), field("chunk_size", "0")}, 400, "chunk_size"},
		{"bad options", []formFile{file("a.png", "ok"), field("options", "{not json")}, 400, "options"},
		{"unknown field", []formFile{file("a.png", "ok"), field("colour", "red")}, 400, "colour"},
		{"too many files", []formFile{file("a.png", "1"), file("b.png", "2"), file("c.png", "3"), file("d.png", "4")}, 413, "at most 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(o *httpapi.Options) {
				o.MaxUploadBytes = 1000
				o.MaxRequestBytes = 2500
				o.MaxUploadFiles = 3
			})
			body, ct := multipartBody(t, tt.parts...)
			m := wantError(t, e.do(t, "POST", "/batches", body, "Content-Type", ct), tt.code)
			if msg, _ := m["error"].(string); !strings.Contains(msg, tt.msg) {
				t.Errorf("error %q, want it to mention %q", msg, tt.msg)
			}
			if left := uploads(t, e.dataDir); len(left) != 0 {
				t.Errorf("uploads left behind after a failed submission: %v", left)
			}
		})
	}
	t.Run("malformed multipart", func(t *testing.T) {
		e := newEnv(t, nil)
		wantError(t, e.do(t, "POST", "/batches", strings.NewReader("--B\r\nnonsense"), "Content-Type", "multipart/form-data; boundary=B"), 400)
		wantError(t, e.do(t, "POST", "/batches", strings.NewReader("x"), "Content-Type", "multipart/form-data"), 400)
	})
}

func TestListBatches(t *testing.T) {
	e := newEnv(t, nil)
	first := submit(t, e.store, "alpha", 1)
	second := submit(t, e.store, "beta", 2)
	if _, err := e.store.RevokeBatch(context.Background(), first.BatchID, "test"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		query string
		want  []string
	}{
		{"", []string{second.BatchID, first.BatchID}},
		{"?status=REVOKED", []string{first.BatchID}},
		{"?status=pending", []string{second.BatchID}},
		{"?name=beta", []string{second.BatchID}},
		{"?name=gamma", nil},
		{"?limit=1", []string{second.BatchID}},
		{"?limit=1&offset=1", []string{first.BatchID}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			rec := e.do(t, "GET", "/batches"+tt.query, nil)
			wantStatus(t, rec, 200)
			var got []string
			for _, m := range decode[[]map[string]any](t, rec) {
				got = append(got, m["batch_id"].(string))
				if _, ok := m["progress"].(float64); !ok {
					t.Errorf("no progress in %v", m)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("batches %v, want %v", got, tt.want)
			}
		})
	}
	for _, q := range []string{"status=DONE", "limit=-1", "limit=5000", "offset=z"} {
		t.Run(q, func(t *testing.T) { wantError(t, e.do(t, "GET", "/batches?"+q, nil), 400) })
	}
}

func TestBatchProgress(t *testing.T) {
	e := newEnv(t, nil)
	b := submit(t, e.store, "progress", 4)
	// One chain fails at OCR; the others pass it.
	first := true
	runStage(t, e.store, tracking.StageOCR, func(*tracking.Claimed) tracking.Outcome {
		if first {
			first = false
			return tracking.Outcome{Err: tracking.Permanent(fmt.Errorf("unreadable"))}
		}
		return succeed(nil)
	})
	m := decode[map[string]any](t, e.do(t, "GET", "/batches/"+b.BatchID, nil))
	if m["progress"] != 25.0 || m["failed_images"] != 1.0 {
		t.Errorf("progress %v, failed_images %v; want 25, 1", m["progress"], m["failed_images"])
	}
	var failed int
	for _, x := range m["chains"].([]any) {
		c := x.(map[string]any)
		if c["status"] == "FAILURE" {
			failed++
			if !strings.Contains(c["error_message"].(string), "unreadable") {
				t.Errorf("error_message %v", c["error_message"])
			}
		}
	}
	if failed != 1 {
		t.Errorf("%d failed chains listed, want 1", failed)
	}
	wantError(t, e.do(t, "GET", "/batches/no-such-batch", nil), 404)
}

func TestCancel(t *testing.T) {
	e := newEnv(t, nil)
	b := submit(t, e.store, "cancel", 2)
	other := submit(t, e.store, "other", 1)
	chain := chainIDs(t, e.store, other.BatchID)[0]

	tests := []struct {
		name, target, body string
		code               int
	}{
		{"batch", "/batches/" + b.BatchID + "/cancel", "", 200},
		{"batch again", "/batches/" + b.BatchID + "/cancel", "", 409},
		{"unknown batch", "/batches/nope/cancel", "", 404},
		{"chain with reason", "/chains/" + chain + "/cancel", `{"reason": "wrong file"}`, 200},
		{"chain again", "/chains/" + chain + "/cancel", "", 409},
		{"unknown chain", "/chains/nope/cancel", "", 404},
		{"bad body", "/chains/" + chain + "/cancel", `{"why": 1}`, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := e.do(t, "POST", tt.target, strings.NewReader(tt.body), "Content-Type", "application/json")
			if tt.code != 200 {
				wantError(t, rec, tt.code)
				return
			}
			wantStatus(t, rec, 200)
			if m := decode[map[string]any](t, rec); m["status"] != "REVOKED" {
				t.Errorf("answer %v", m)
			}
		})
	}
	got, err := e.store.Batch(context.Background(), b.BatchID)
	if err != nil || got.Status != tracking.StatusRevoked {
		t.Errorf("batch after cancel: %+v, %v", got, err)
	}
	c, err := e.store.Chain(context.Background(), chain)
	if err != nil || c.Status != tracking.StatusRevoked || !strings.Contains(c.ErrorMessage, "wrong file") {
		t.Errorf("chain after cancel: %+v, %v", c, err)
	}
}
