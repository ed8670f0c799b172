package tracking

import (
	"encoding/json"
	"time"
)

// Batch is a row of batch_executions: a set of images submitted together.
type Batch struct {
	ID              int64           `json:"-"`
	BatchID         string          `json:"batch_id"`
	BatchName       string          `json:"batch_name"`
	Status          Status          `json:"status"`
	TotalImages     int             `json:"total_images"`
	CompletedImages int             `json:"completed_images"`
	FailedImages    int             `json:"failed_images"`
	TotalChunks     int             `json:"total_chunks"`
	CompletedChunks int             `json:"completed_chunks"`
	FailedChunks    int             `json:"failed_chunks"`
	ChunkSize       int             `json:"chunk_size"`
	StartedAt       *time.Time      `json:"started_at"`
	FinishedAt      *time.Time      `json:"finished_at"`
	InitiatedBy     string          `json:"initiated_by"`
	InputData       json.RawMessage `json:"input_data,omitempty"`
	Options         json.RawMessage `json:"options,omitempty"`
	FinalResult     json.RawMessage `json:"final_result,omitempty"`
	ErrorMessage    string          `json:"error_message"`
	CreatedAt       time.Time       `json:"created_at"`
	UpdatedAt       time.Time       `json:"updated_at"`
}

// Progress is (completed_images + failed_images) / total_images * 100.
func (b *Batch) Progress() float64 {
	if b.TotalImages == 0 {
		return 0
	}
	return float64(b.CompletedImages+b.FailedImages) / float64(b.TotalImages) * 100
}

// Chain is a row of chain_executions: one image going through the stages.
type Chain struct {
	ID             int64           `json:"-"`
	ChainID        string          `json:"chain_id"`
	CeleryTaskID   string          `json:"celery_task_id"`
	ChainName      string          `json:"chain_name"`
	BatchID        string          `json:"batch_id,omitempty"` // empty for a document submitted alone
	ChunkIndex     int             `json:"chunk_index"`
	Stages         []Stage         `json:"stages"`
	Status         Status          `json:"status"`
	TotalTasks     int             `json:"total_tasks"`
	CompletedTasks int             `json:"completed_tasks"`
	FailedTasks    int             `json:"failed_tasks"`
	StartedAt      *time.Time      `json:"started_at"`
	FinishedAt     *time.Time      `json:"finished_at"`
	InitiatedBy    string          `json:"initiated_by"`
	InputData      json.RawMessage `json:"input_data,omitempty"`
	FinalResult    json.RawMessage `json:"final_result,omitempty"`
	ErrorMessage   string          `json:"error_message"`
	CreatedAt      time.Time       `json:"created_at"`
	UpdatedAt      time.Time       `json:"updated_at"`
	Tasks          []Task          `json:"tasks,omitempty"`
}

// Progress is completed_tasks / total_tasks, from 0 to 1.
func (c *Chain) Progress() float64 {
	if c.TotalTasks == 0 {
		return 0
	}
	return float64(c.CompletedTasks) / float64(c.TotalTasks)
}

// ChainInput is what a chain's input_data holds: the image and the options
// the stages read. Unknown keys survive a round trip in Extra.
type ChainInput struct {
	ImagePath string          `json:"image_path"`            // where the daemon reads the image
	FileName  string          `json:"file_name,omitempty"`   // the name the client gave it
	PublicURL string          `json:"public_path,omitempty"` // where a client can fetch it
	Options   json.RawMessage `json:"options,omitempty"`     // the batch's pipeline options
}

// Task is a row of task_logs: one attempt-carrying run of one stage of a chain.
// The bookkeeping fields past Error are docpipe's queue columns.
type Task struct {
	ID               int64           `json:"-"`
	TaskID           string          `json:"task_id"`
	TaskName         Stage           `json:"task_name"`
	Status           Status          `json:"status"`
	Error            string          `json:"error"`
	StartedAt        *time.Time      `json:"started_at"`
	FinishedAt       *time.Time      `json:"finished_at"`
	Retries          int             `json:"retries"`
	ChainExecutionID *int64          `json:"-"`
	StageIndex       int             `json:"stage_index"`
	Attempt          int             `json:"attempt"`
	MaxAttempts      int             `json:"max_attempts"`
	RunAfter         time.Time       `json:"run_after"`
	LeaseExpiresAt   *time.Time      `json:"lease_expires_at,omitempty"`
	Owner            string          `json:"owner,omitempty"`
	Result           json.RawMessage `json:"result,omitempty"`
	CreatedAt        time.Time       `json:"created_at"`
	UpdatedAt        time.Time       `json:"updated_at"`
}

// OCR execution statuses (ocr_executions.status).
const (
	OCRSuccess = "success"
	OCRFailed  = "failed"
)

// Point is one corner of a box, in image pixels.
type Point [2]float64

// BBox is a 4-point box in image pixels, clockwise from top-left:
// [[x1,y1],[x2,y2],[x3,y3],[x4,y4]].
type BBox [4]Point

// Rect makes the axis-aligned BBox of the rectangle (x0,y0)-(x1,y1).
func Rect(x0, y0, x1, y1 float64) BBox {
	return BBox{{x0, y0}, {x1, y0}, {x1, y1}, {x0, y1}}
}

// Bounds returns the axis-aligned bounding rectangle of b.
func (b BBox) Bounds() (x0, y0, x1, y1 float64) {
	x0, y0, x1, y1 = b[0][0], b[0][1], b[0][0], b[0][1]
	for _, p := range b[1:] {
		x0, y0 = min(x0, p[0]), min(y0, p[1])
		x1, y1 = max(x1, p[0]), max(y1, p[1])
	}
	return x0, y0, x1, y1
}

// Box levels (ocr_text_boxes.level).
const (
	LevelWord = "word"
	LevelLine = "line"
)

// TextBox is a row of ocr_text_boxes: one recognised word (or line).
type TextBox struct {
	ID         int64   `json:"id,omitempty"`
	Text       string  `json:"text"`
	Confidence float64 `json:"confidence"` // 0.0–1.0
	BBox       BBox    `json:"bbox"`
	Page       int     `json:"page"`  // 1-based page of a multi-page input
	Level      string  `json:"level"` // LevelWord or LevelLine
	Seq        int     `json:"seq"`   // reading order within the execution, from 0
}

// OCRResult is a row of ocr_executions with its boxes.
type OCRResult struct {
	ID         int64     `json:"id,omitempty"`
	ChainID    string    `json:"chain_id"`
	ImagePath  string    `json:"image_path"`
	PublicPath string    `json:"public_path"`
	Status     string    `json:"status"` // OCRSuccess or OCRFailed
	Error      string    `json:"error,omitempty"`
	Pages      int       `json:"pages"`
	Width      int       `json:"width"`  // of the first page, in pixels
	Height     int       `json:"height"` // of the first page, in pixels
	Boxes      []TextBox `json:"boxes,omitempty"`
}
