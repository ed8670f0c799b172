package extract

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/docpipe/docpipe/tracking"
)

// Config configures the LLM extractor. The daemon fills it from
// DOCPIPE_LLM_URL, DOCPIPE_LLM_MODEL and DOCPIPE_LLM_API_KEY. Zero
// durations and counts take the defaults given below.
type Config struct {
	// URL is the base of an OpenAI-compatible API, e.g.
	// "http://host:8080/v1"; requests go to URL + "/chat/completions".
	URL string
	// Model is sent as "model" (llama.cpp server ignores it, vLLM and
	// Ollama need it).
	Model string
	// APIKey, when set, is sent as "Authorization: Bearer <APIKey>".
	APIKey string
	// Timeout bounds one HTTP attempt (default 120s); the caller's context
	// bounds the whole call.
	Timeout time.Duration
	// MaxAttempts is how many requests one Extract may make, counting
	// retries after 429, 5xx, transport errors and invalid answers
	// (default 3).
	MaxAttempts int
	// MaxRetryWait caps one wait between attempts (default 30s). A server
	// asking (by Retry-After) for a longer wait ends the call with a
	// retryable error, leaving the wait to the task queue's backoff.
	MaxRetryWait time.Duration
	// MaxPromptChars caps the OCR text sent (default 24000 characters).
	MaxPromptChars int
	// HTTPClient, when set, is used instead of a fresh http.Client (its
	// Timeout is left alone).
	HTTPClient *http.Client
}

// Defaults of Config.
const (
	DefaultLLMTimeout     = 120 * time.Second
	DefaultLLMMaxAttempts = 3
	DefaultMaxRetryWait   = 30 * time.Second
	DefaultMaxPromptChars = 24000
)

// ErrInvalidAnswer is wrapped by the error returned when the LLM's answers
// were not JSON or did not match the schema on every attempt. That error
// is also tracking.Permanent.
var ErrInvalidAnswer = errors.New("invalid LLM answer")

// StatusError is an HTTP error answer of the chat-completions endpoint.
type StatusError struct {
	Code       int           // HTTP status code
	Reason     string        // the server's error message, or the start of its body
	RetryAfter time.Duration // from Retry-After, 0 when absent
}

func (e *StatusError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("HTTP %d %s", e.Code, http.StatusText(e.Code))
	}
	return fmt.Sprintf("HTTP %d %s: %s", e.Code, http.StatusText(e.Code), e.Reason)
}

// Retryable reports whether the status may succeed later (429 and 5xx).
func (e *StatusError) Retryable() bool {
	return e.Code == http.StatusTooManyRequests || e.Code >= 500
}

// LLM extracts fields by asking an OpenAI-compatible chat-completions
// endpoint (llama.cpp server, vLLM, Ollama, OpenAI) for a strict
// JSON-schema answer, which it validates against the schema before use.
// It only relies on choices[0].message.content of the answer. Safe for
// concurrent use.
type LLM struct {
	cfg      Config
	endpoint string
	client   *http.Client
	// sleep waits d or until ctx is done; now is the clock for Retry-After
	// dates. Tests replace both.
	sleep func(ctx context.Context, d time.Duration) error
	now   func() time.Time
}

// NewLLM checks cfg and makes an LLM extractor.
func NewLLM(cfg Config) (*LLM, error) {
	u, err := url.Parse(strings.TrimSpace(cfg.URL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("llm config: URL %q must be an absolute http(s) URL such as http://host:8080/v1", cfg.URL)
	}
	if strings.TrimSpace(cfg.Model) == "" {
		return nil, errors.New("llm config: model is required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultLLMTimeout
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultLLMMaxAttempts
	}
	if cfg.MaxRetryWait <= 0 {
		cfg.MaxRetryWait = DefaultMaxRetryWait
	}
	if cfg.MaxPromptChars <= 0 {
		cfg.MaxPromptChars = DefaultMaxPromptChars
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: cfg.Timeout}
	}
	return &LLM{
		cfg:      cfg,
		endpoint: strings.TrimRight(u.String(), "/") + "/chat/completions",
		client:   client,
		sleep:    sleepCtx,
		now:      time.Now,
	}, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// chatRequest is the chat-completions request body.
type chatRequest struct {
	Model          string         `json:"model"`
	Messages       []chatMessage  `json:"messages"`
	Temperature    float64        `json:"temperature"`
	ResponseFormat responseFormat `json:"response_format"`
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type responseFormat struct {
	Type       string         `json:"type"`
	JSONSchema jsonSchemaSpec `json:"json_schema"`
}

type jsonSchemaSpec struct {
	Name   string          `json:"name"`
	Strict bool            `json:"strict"`
	Schema json.RawMessage `json:"schema"`
}

// chatResponse is the part of a chat-completions answer docpipe reads.
type chatResponse struct {
	Choices []struct {
		Message struct {
			Content *string `json:"content"`
		} `json:"message"`
	} `json:"choices"`
}

// llmAnswer is the shape LLMSchema asks for.
type llmAnswer struct {
	Fields map[string]struct {
		Value *string `json:"value"`
		Line  *int    `json:"line"`
	} `json:"fields"`
	Pairs []struct {
		Key   string `json:"key"`
		Value string `json:"value"`
		Line  *int   `json:"line"`
	} `json:"pairs"`
}

var schemaNameRE = regexp.MustCompile(`[^a-zA-Z0-9_-]+`)

// Extract implements Extractor. Errors: a tracking.Permanent error for a
// 4xx answer other than 429 (with the server's reason) and for answers
// that were invalid JSON or broke the schema on every attempt (wrapping
// ErrInvalidAnswer); a retryable error when 429/5xx/transport failures
// outlast the attempts or ctx ends.
func (c *LLM) Extract(ctx context.Context, doc *Document) (*Fields, error) {
	schema := doc.Schema
	if schema == nil {
		schema = DefaultSchema()
	}
	body, err := json.Marshal(c.request(doc, schema))
	if err != nil {
		return nil, fmt.Errorf("llm extract: marshal request: %w", err)
	}
	validator := schema.llmSchema()
	var lastErr error
	for attempt := 1; attempt <= c.cfg.MaxAttempts; attempt++ {
		content, err := c.post(ctx, body)
		if err == nil {
			var fields *Fields
			fields, err = c.parse(content, doc, schema, validator)
			if err == nil {
				return fields, nil
			}
		}
		lastErr = err
		if ctx.Err() != nil {
			return nil, fmt.Errorf("llm extract: attempt %d: %w", attempt, errors.Join(ctx.Err(), err))
		}
		var se *StatusError
		wait := backoff(attempt)
		switch {
		case errors.As(err, &se) && !se.Retryable():
			return nil, tracking.Permanent(fmt.Errorf("llm extract: %s: %w", c.endpoint, err))
		case errors.As(err, &se) && se.RetryAfter > 0:
			wait = se.RetryAfter
		}
		if attempt == c.cfg.MaxAttempts {
			break
		}
		if wait > c.cfg.MaxRetryWait {
			return nil, fmt.Errorf("llm extract: attempt %d: server asks to wait %s (more than %s): %w", attempt, wait, c.cfg.MaxRetryWait, err)
		}
		if err := c.sleep(ctx, wait); err != nil {
			return nil, fmt.Errorf("llm extract: waiting to retry after %v: %w", lastErr, err)
		}
	}
	if errors.Is(lastErr, ErrInvalidAnswer) {
		return nil, tracking.Permanent(fmt.Errorf("llm extract: %d attempts: %w", c.cfg.MaxAttempts, lastErr))
	}
	return nil, fmt.Errorf("llm extract: %d attempts: %w", c.cfg.MaxAttempts, lastErr)
}

// backoff is the wait before attempt+1 when the server gives none: 1s, 2s, 4s, ...
func backoff(attempt int) time.Duration {
	return time.Second << min(attempt-1, 10)
}

// request builds the chat-completions request for doc.
func (c *LLM) request(doc *Document, schema *Schema) *chatRequest {
	var sys strings.Builder
	fmt.Fprintf(&sys, "You extract fields from the OCR text of one scanned document (%s", schema.Name)
	if schema.Description != "" {
		fmt.Fprintf(&sys, ": %s", schema.Description)
	}
	sys.WriteString(").\nAnswer with one JSON object that matches the given JSON schema and nothing else.\n" +
		"For every field give the value as printed in the document (only fix obvious OCR mistakes), and the index of the line it is on (the number after L); use null for both when the document does not have the field.\n" +
		"Also list the labelled \"key: value\" pairs printed in the document.\nFields:\n")
	for _, f := range schema.Fields {
		fmt.Fprintf(&sys, "- %s (%s): %s\n", f.Name, f.Type, f.Description)
	}

	var user strings.Builder
	user.WriteString("OCR lines, in reading order, as L<index> [x,y,width,height] text:\n")
	for _, l := range doc.Lines {
		x0, y0, x1, y1 := l.BBox.Bounds()
		line := fmt.Sprintf("L%d [%.0f,%.0f,%.0f,%.0f] %s\n", l.Index, x0, y0, x1-x0, y1-y0, l.Text)
		if l.Page > 1 {
			line = fmt.Sprintf("L%d p%d [%.0f,%.0f,%.0f,%.0f] %s\n", l.Index, l.Page, x0, y0, x1-x0, y1-y0, l.Text)
		}
		if user.Len()+len(line) > c.cfg.MaxPromptChars {
			user.WriteString("(the remaining lines were cut)\n")
			break
		}
		user.WriteString(line)
	}
	name := schemaNameRE.ReplaceAllString(schema.Name, "_")
	if name == "" || name == "_" {
		name = "fields"
	}
	return &chatRequest{
		Model: c.cfg.Model,
		Messages: []chatMessage{
			{Role: "system", Content: sys.String()},
			{Role: "user", Content: user.String()},
		},
		ResponseFormat: responseFormat{
			Type:       "json_schema",
			JSONSchema: jsonSchemaSpec{Name: name, Strict: true, Schema: schema.LLMSchema()},
		},
	}
}

// maxBody bounds how much of an answer is read.
const maxBody = 8 << 20

// post sends one request and returns choices[0].message.content.
func (c *LLM) post(ctx context.Context, body []byte) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if c.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.APIKey)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("post %s: %w", c.endpoint, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return "", fmt.Errorf("read answer of %s: %w", c.endpoint, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", &StatusError{Code: resp.StatusCode, Reason: errorReason(data), RetryAfter: c.retryAfter(resp.Header.Get("Retry-After"))}
	}
	var cr chatResponse
	if err := json.Unmarshal(data, &cr); err != nil {
		return "", fmt.Errorf("%w: response is not chat-completions JSON: %v", ErrInvalidAnswer, err)
	}
	if len(cr.Choices) == 0 || cr.Choices[0].Message.Content == nil {
		return "", fmt.Errorf("%w: response has no choices[0].message.content", ErrInvalidAnswer)
	}
	return *cr.Choices[0].Message.Content, nil
}

// errorReason pulls the message out of an error body ({"error":
// {"message": ...}}, {"error": "..."}, {"message": ...}) or returns the
// start of the body.
func errorReason(data []byte) string {
	var e struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
		Detail  any             `json:"detail"`
	}
	if json.Unmarshal(data, &e) == nil {
		var inner struct {
			Message string `json:"message"`
		}
		var s string
		switch {
		case json.Unmarshal(e.Error, &inner) == nil && inner.Message != "":
			return truncate(inner.Message, 300)
		case json.Unmarshal(e.Error, &s) == nil && s != "":
			return truncate(s, 300)
		case e.Message != "":
			return truncate(e.Message, 300)
		case e.Detail != nil:
			return truncate(fmt.Sprint(e.Detail), 300)
		}
	}
	return truncate(strings.TrimSpace(string(data)), 300)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && s[cut]&0xC0 == 0x80 { // don't split a UTF-8 sequence
		cut--
	}
	return s[:cut] + "..."
}

// retryAfter reads a Retry-After header: delay-seconds or an HTTP date.
func (c *LLM) retryAfter(h string) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if secs, err := strconv.ParseFloat(h, 64); err == nil {
		if secs <= 0 || secs != secs {
			return 0
		}
		return time.Duration(min(secs, 1e6) * float64(time.Second))
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(t.Sub(c.now()), 0)
	}
	return 0
}

// parse decodes, validates and converts the model's answer.
func (c *LLM) parse(content string, doc *Document, schema *Schema, validator *jsonSchema) (*Fields, error) {
	content = stripFences(content)
	dec := json.NewDecoder(strings.NewReader(content))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: content is not JSON: %v (content starts %q)", ErrInvalidAnswer, err, truncate(content, 80))
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: content has data after the JSON object", ErrInvalidAnswer)
	}
	if err := validator.validate(v, "$", 0); err != nil {
		return nil, fmt.Errorf("%w: does not match the schema: %v", ErrInvalidAnswer, err)
	}
	var ans llmAnswer
	if err := json.Unmarshal([]byte(content), &ans); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidAnswer, err)
	}
	return answerFields(&ans, doc, schema), nil
}

// stripFences removes a Markdown code fence some servers wrap JSON in.
func stripFences(s string) string {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "```") {
		return s
	}
	s = strings.TrimPrefix(s, "```")
	if nl := strings.IndexByte(s, '\n'); nl >= 0 && !strings.HasPrefix(strings.TrimSpace(s[:nl]), "{") {
		s = s[nl+1:] // drop a language tag
	}
	return strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(s), "```"))
}

// answerFields turns a validated answer into Fields, locating each value in
// the OCR lines for its box ids and confidence.
func answerFields(ans *llmAnswer, doc *Document, schema *Schema) *Fields {
	out := &Fields{Fields: make(map[string]Field)}
	for _, sf := range schema.Fields {
		a, ok := ans.Fields[sf.Name]
		if !ok || a.Value == nil || strings.TrimSpace(*a.Value) == "" {
			continue
		}
		raw := strings.TrimSpace(*a.Value)
		ids, conf := locate(doc, raw, a.Line)
		f := Field{Raw: raw, Confidence: conf, BoxIDs: ids}
		if v, ok := sf.normalise(raw); ok {
			f.Value = v
		} else {
			f.Confidence = 0 // the model's text is kept in Raw, but it is not a valid value
		}
		out.Fields[sf.Name] = f
	}
	for _, p := range ans.Pairs {
		key, val := strings.TrimSpace(p.Key), strings.TrimSpace(p.Value)
		if key == "" || val == "" {
			continue
		}
		ids, conf := locate(doc, val, p.Line)
		out.Pairs = append(out.Pairs, Pair{Key: key, Value: val, Confidence: conf, BoxIDs: ids})
	}
	out.complete(schema)
	return out
}

// locate finds raw in the line the model named (or, failing that, in any
// line) and returns the ids of the words it covers and a confidence: the
// words' OCR confidence scaled by how well the value was found.
func locate(doc *Document, raw string, line *int) ([]int64, float64) {
	find := func(l *Line) (int, int, bool) {
		i := strings.Index(strings.ToLower(l.Text), strings.ToLower(raw))
		if i < 0 {
			return 0, 0, false
		}
		return i, i + len(raw), true
	}
	if line != nil && *line >= 0 && *line < len(doc.Lines) {
		l := &doc.Lines[*line]
		if s, e, ok := find(l); ok {
			ids, conf := l.span(s, e)
			return ids, 0.9 * conf
		}
		ids, conf := l.all()
		return ids, 0.6 * conf
	}
	for i := range doc.Lines {
		l := &doc.Lines[i]
		if s, e, ok := find(l); ok {
			ids, conf := l.span(s, e)
			return ids, 0.8 * conf
		}
	}
	return nil, 0.5
}
