package ocr

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// corpusImages lists the corpus's images (.jpg and .tif).
func corpusImages(tb testing.TB) []string {
	tb.Helper()
	dir := corpusDir(tb)
	var paths []string
	for _, pat := range []string{"*.jpg", "*.tif"} {
		m, err := filepath.Glob(filepath.Join(dir, pat))
		if err != nil {
			tb.Fatal(err)
		}
		paths = append(paths, m...)
	}
	slices.Sort(paths)
	return paths
}

// BenchmarkCorpus OCRs the whole corpus through a Stage with 2 workers and,
// in the same run, with the tesseract CLI under xargs -P2, reporting both
// rates and their ratio. The two sides alternate in chunks of 6 images so
// that a change in machine load hits both alike. Run it with
// OMP_THREAD_LIMIT=1 in the environment and -benchtime=1x (one pass is
// about 30 s per side on 2 cores).
func BenchmarkCorpus(b *testing.B) {
	const workers, chunk = 2, 6
	if !ThreadLimitSet() {
		b.Log("OMP_THREAD_LIMIT=1 is not set: Tesseract may start extra threads")
	}
	paths := corpusImages(b)
	ctx := context.Background()
	s := NewStage(StageOptions{Workers: workers})
	defer s.Close()
	// Load the language data of every engine first, as a running daemon has.
	good := goodImage(b)
	if _, err := StageRate(ctx, s, []string{good, good}, workers); err != nil {
		b.Fatal(err)
	}
	var stage, cli Rate
	add := func(sum *Rate, r Rate) {
		sum.Images += r.Images
		sum.Wall += r.Wall
		sum.CPU += r.CPU
	}
	b.ResetTimer()
	for range b.N {
		for i := 0; i < len(paths); i += chunk {
			part := paths[i:min(i+chunk, len(paths))]
			r, err := StageRate(ctx, s, part, workers)
			if err != nil {
				b.Fatal(err)
			}
			add(&stage, r)
			b.StopTimer()
			if r, err = CLIRate(ctx, part, workers, Options{}); err != nil {
				b.Fatal(err)
			}
			add(&cli, r)
			b.StartTimer()
		}
	}
	b.ReportMetric(stage.PerSecond(), "docpipe-images/s")
	b.ReportMetric(cli.PerSecond(), "cli-images/s")
	b.ReportMetric(stage.PerSecond()/cli.PerSecond(), "speedup")
	b.ReportMetric(stage.PerCPUSecond(), "docpipe-images/cpu-s")
	b.ReportMetric(cli.PerCPUSecond(), "cli-images/cpu-s")
	b.ReportMetric(stage.PerCPUSecond()/cli.PerCPUSecond(), "cpu-speedup")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkRecognize is the cost of one small rendered page on a warm
// Client: the per-image overhead docpipe adds around Tesseract.
func BenchmarkRecognize(b *testing.B) {
	c := newClient(b, Options{})
	good := goodImage(b)
	recognize(b, c, good)
	b.ResetTimer()
	for range b.N {
		recognize(b, c, good)
	}
}

// rssKB reads this process's resident set size from /proc.
func rssKB(t testing.TB) int {
	t.Helper()
	f, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(f))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestLongRunMemory recognises 500 images on one Client and checks that
// RSS after 500 is within 20% of RSS after 50. Opt-in: DOCPIPE_LONG=1.
func TestLongRunMemory(t *testing.T) {
	if os.Getenv("DOCPIPE_LONG") != "1" {
		t.Skip("set DOCPIPE_LONG=1 to run")
	}
	face := goFace(t)
	var pages []string
	for i := range 10 {
		img, _ := render(t, face, 1200, 400, []textLine{
			{60, 90, fmt.Sprintf("Invoice %d of ACME Trading", 1000+i)},
			{60, 180, fmt.Sprintf("Date 0%d/03/2024 Total %d.%02d", i%9+1, 10*i+3, i*7%100)},
			{60, 270, "Thank you for your business"},
		})
		pages = append(pages, writeFile(t, fmt.Sprintf("p%d.png", i), pngBytes(t, img)))
	}
	for _, p := range corpusImages(t) {
		if st, err := os.Stat(p); err == nil && st.Size() < 300_000 && strings.HasSuffix(p, ".jpg") {
			pages = append(pages, p) // the small receipts
		}
	}
	c := newClient(t, Options{})
	var at50 int
	for i := range 500 {
		recognize(t, c, pages[i%len(pages)])
		if i+1 == 50 || i+1 == 500 || (i+1)%100 == 0 {
			debug.FreeOSMemory()
			rss := rssKB(t)
			t.Logf("after %d images: RSS %d kB", i+1, rss)
			if i+1 == 50 {
				at50 = rss
			}
			if i+1 == 500 && float64(rss) > 1.2*float64(at50) {
				t.Errorf("RSS grew from %d kB to %d kB (more than 20%%)", at50, rss)
			}
		}
	}
}
