package tracking

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// insertOCRSQL records OCR executions; a chain's earlier execution (from
// an attempt whose commit was rolled back, or a re-run) is replaced, never
// duplicated. An image_path already recorded by another chain is a unique
// violation: the commit fails rather than overwrite that chain's data.
const insertOCRSQL = `
WITH gone AS (
	DELETE FROM ocr_executions WHERE chain_id = ANY($1::text[])
)
INSERT INTO ocr_executions (chain_id, image_path, public_path, status, error, pages, width, height, created_at, updated_at)
SELECT u.chain_id, u.image_path, NULLIF(u.public_path, ''), u.status, NULLIF(u.error, ''), u.pages,
	NULLIF(u.width, 0), NULLIF(u.height, 0), $9, $9
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[], $8::int[])
	AS u(chain_id, image_path, public_path, status, error, pages, width, height)
RETURNING id, chain_id`

// insertOCR writes executions with one statement and all their boxes with
// one COPY, inside the caller's transaction.
func (s *Store) insertOCR(ctx context.Context, tx pgx.Tx, ocrs []*OCRResult, now time.Time) error {
	n := len(ocrs)
	chainIDs, paths, public, status, errs := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	pages, widths, heights := make([]int32, n), make([]int32, n), make([]int32, n)
	byChain := make(map[string]*OCRResult, n)
	for i, r := range ocrs {
		st := r.Status
		if st == "" {
			st = OCRSuccess
		}
		chainIDs[i], paths[i], public[i], status[i], errs[i] = r.ChainID, r.ImagePath, r.PublicPath, st, r.Error
		pages[i], widths[i], heights[i] = int32(max(r.Pages, 1)), int32(r.Width), int32(r.Height)
		byChain[r.ChainID] = r
	}
	rows, err := tx.Query(ctx, insertOCRSQL, chainIDs, paths, public, status, errs, pages, widths, heights, now)
	if err != nil {
		return fmt.Errorf("insert ocr executions: %w", err)
	}
	var id int64
	var chainID string
	if _, err := pgx.ForEachRow(rows, []any{&id, &chainID}, func() error {
		byChain[chainID].ID = id
		return nil
	}); err != nil {
		return fmt.Errorf("insert ocr executions: %w", err)
	}
	src := &boxSource{ocrs: ocrs, now: now, bi: -1}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"ocr_text_boxes"},
		[]string{"ocr_execution_id", "text", "confidence", "bbox", "page", "level", "seq", "created_at", "updated_at"},
		src); err != nil {
		return fmt.Errorf("copy ocr boxes: %w", err)
	}
	return nil
}

// boxSource streams every box of every execution to COPY without building
// an intermediate [][]any.
type boxSource struct {
	ocrs []*OCRResult
	now  time.Time
	ri   int // current execution
	bi   int // current box within it
	row  [9]any
	buf  []byte
}

func (b *boxSource) Next() bool {
	for b.ri < len(b.ocrs) {
		b.bi++
		if b.bi < len(b.ocrs[b.ri].Boxes) {
			return true
		}
		b.ri++
		b.bi = -1
	}
	return false
}

func (b *boxSource) Values() ([]any, error) {
	r := b.ocrs[b.ri]
	x := &r.Boxes[b.bi]
	level := x.Level
	if level == "" {
		level = LevelWord
	}
	page := x.Page
	if page == 0 {
		page = 1
	}
	b.buf = appendBBox(b.buf[:0], x.BBox)
	b.row = [9]any{r.ID, x.Text, x.Confidence, string(b.buf), int32(page), level, int32(x.Seq), b.now, b.now}
	return b.row[:], nil
}

func (b *boxSource) Err() error { return nil }

// appendBBox writes b as the JSON [[x1,y1],[x2,y2],[x3,y3],[x4,y4]].
func appendBBox(dst []byte, b BBox) []byte {
	dst = append(dst, '[')
	for i, p := range b {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '[')
		dst = strconv.AppendFloat(dst, p[0], 'f', -1, 64)
		dst = append(dst, ',')
		dst = strconv.AppendFloat(dst, p[1], 'f', -1, 64)
		dst = append(dst, ']')
	}
	return append(dst, ']')
}
