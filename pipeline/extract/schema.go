package extract

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
)

//go:embed schemas/receipt.json
var schemaFS embed.FS

// Field types of a Schema: they say how a value is normalised.
const (
	TypeText     = "text"     // whitespace collapsed
	TypeDate     = "date"     // ISO 8601 YYYY-MM-DD (see ParseDate)
	TypeAmount   = "amount"   // plain decimal (see ParseAmount)
	TypeCurrency = "currency" // ISO 4217 code
)

// Built-in rules: the things the Builtin extractor knows how to find.
const (
	RuleCompany       = "company"
	RuleAddress       = "address"
	RuleDate          = "date"
	RuleTotal         = "total"
	RuleCurrency      = "currency"
	RuleInvoiceNumber = "invoice_number"
	RuleTax           = "tax"
)

var builtinRules = []string{RuleCompany, RuleAddress, RuleDate, RuleTotal, RuleCurrency, RuleInvoiceNumber, RuleTax}

// Schema lists the fields to extract for one workflow. It is read from a
// JSON file of this shape:
//
//	{"name": "receipt", "description": "...", "fields": [
//	  {"name": "total", "type": "amount", "description": "grand total ..."},
//	  {"name": "vendor", "type": "text", "rule": "company"},
//	  {"name": "order_ref", "type": "text", "labels": ["order no", "po number"]},
//	  {"name": "currency", "type": "currency", "enum": ["MYR", "USD"]}
//	]}
//
// name is the key in the result ([a-z][a-z0-9_]*); type is text (default),
// date, amount or currency; description guides the LLM; rule names the
// built-in rule that finds the field (company, address, date, total,
// currency, invoice_number, tax; defaults to the field's name when that is
// a rule); labels are keys of "key: value" pairs the built-in extractor
// takes the value from when no rule applies; enum restricts the value.
// A Schema is read-only once loaded and safe to share.
type Schema struct {
	Name        string        `json:"name"`
	Description string        `json:"description,omitempty"`
	Fields      []SchemaField `json:"fields"`
}

// SchemaField is one field of a Schema.
type SchemaField struct {
	Name        string   `json:"name"`
	Type        string   `json:"type,omitempty"`
	Description string   `json:"description,omitempty"`
	Rule        string   `json:"rule,omitempty"`
	Labels      []string `json:"labels,omitempty"`
	Enum        []string `json:"enum,omitempty"`
}

var fieldNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// DefaultSchema returns the embedded receipt/invoice schema: company,
// address, date, total, currency, invoice_number and tax. Each call returns
// a fresh copy.
func DefaultSchema() *Schema {
	data, err := schemaFS.ReadFile("schemas/receipt.json")
	if err != nil {
		panic(fmt.Sprintf("extract: embedded schema: %v", err)) // cannot happen: the file is embedded
	}
	s, err := ParseSchema(data)
	if err != nil {
		panic(fmt.Sprintf("extract: embedded schema: %v", err)) // caught by the package's tests
	}
	return s
}

// LoadSchema reads and validates a schema file.
func LoadSchema(path string) (*Schema, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load schema: %w", err)
	}
	s, err := ParseSchema(data)
	if err != nil {
		return nil, fmt.Errorf("load schema %s: %w", path, err)
	}
	return s, nil
}

// ParseSchema decodes and validates a schema document. Unknown keys, bad
// JSON, duplicate or malformed field names, unknown types and rules are
// errors that say where the problem is.
func ParseSchema(data []byte) (*Schema, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var s Schema
	if err := dec.Decode(&s); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line, col := position(data, se.Offset)
			return nil, fmt.Errorf("parse schema: invalid JSON at line %d column %d: %w", line, col, err)
		}
		return nil, fmt.Errorf("parse schema: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parse schema: trailing data after the JSON object")
	}
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("parse schema: %w", err)
	}
	return &s, nil
}

// position turns a byte offset into a 1-based line and column.
func position(data []byte, off int64) (line, col int) {
	off = min(max(off, 0), int64(len(data)))
	before := data[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(off) - bytes.LastIndexByte(before, '\n')
	return line, col
}

func (s *Schema) validate() error {
	if strings.TrimSpace(s.Name) == "" {
		return errors.New(`"name" is required`)
	}
	if len(s.Fields) == 0 {
		return errors.New(`"fields" must list at least one field`)
	}
	seen := make(map[string]bool)
	for i := range s.Fields {
		f := &s.Fields[i]
		if !fieldNameRE.MatchString(f.Name) {
			return fmt.Errorf("field %d: name %q must match %s", i, f.Name, fieldNameRE)
		}
		if seen[f.Name] {
			return fmt.Errorf("field %q is listed twice", f.Name)
		}
		seen[f.Name] = true
		switch f.Type {
		case "":
			f.Type = TypeText
		case TypeText, TypeDate, TypeAmount, TypeCurrency:
		default:
			return fmt.Errorf("field %q: unknown type %q (want text, date, amount or currency)", f.Name, f.Type)
		}
		if f.Rule == "" && slices.Contains(builtinRules, f.Name) {
			f.Rule = f.Name
		}
		if f.Rule != "" && !slices.Contains(builtinRules, f.Rule) {
			return fmt.Errorf("field %q: unknown rule %q (want one of %s)", f.Name, f.Rule, strings.Join(builtinRules, ", "))
		}
	}
	return nil
}

// normalise turns a raw value into the field's normalised form; ok is false
// when the value does not parse as the field's type.
func (f *SchemaField) normalise(raw string) (string, bool) {
	raw = strings.Join(strings.Fields(raw), " ")
	if raw == "" {
		return "", false
	}
	var v string
	switch f.Type {
	case TypeDate:
		d, ok := ParseDate(raw)
		if !ok {
			return "", false
		}
		v = d
	case TypeAmount:
		a, ok := ParseAmount(raw)
		if !ok {
			return "", false
		}
		v = a
	case TypeCurrency:
		v = currencyCode(raw)
		if v == "" {
			if cs := findCurrencies(raw); len(cs) > 0 {
				v = cs[0].currency
			} else {
				v = strings.ToUpper(raw)
			}
		}
	default:
		v = raw
	}
	if len(f.Enum) > 0 && !slices.Contains(f.Enum, v) {
		return "", false
	}
	return v, true
}

// jsonSchema is the subset of JSON Schema docpipe sends to an LLM and
// validates its answers against.
type jsonSchema struct {
	Type                 []string               `json:"-"`
	Description          string                 `json:"description,omitempty"`
	Properties           map[string]*jsonSchema `json:"properties,omitempty"`
	Required             []string               `json:"required,omitempty"`
	AdditionalProperties *bool                  `json:"additionalProperties,omitempty"`
	Items                *jsonSchema            `json:"items,omitempty"`
	Enum                 []any                  `json:"enum,omitempty"`
}

// MarshalJSON writes "type" as a string when there is one type.
func (j *jsonSchema) MarshalJSON() ([]byte, error) {
	type plain jsonSchema
	var typ any
	switch len(j.Type) {
	case 0:
	case 1:
		typ = j.Type[0]
	default:
		typ = j.Type
	}
	return json.Marshal(struct {
		Type any `json:"type,omitempty"`
		*plain
	}{typ, (*plain)(j)})
}

// LLMSchema returns the JSON Schema of the answer asked of an LLM for s:
//
//	{"fields": {"<name>": {"value": string|null, "line": integer|null}, ...},
//	 "pairs": [{"key": string, "value": string, "line": integer|null}]}
//
// where line is the index of the OCR line the value was read from. Every
// object is closed (additionalProperties false) and lists all its
// properties as required, as OpenAI's strict mode demands.
func (s *Schema) LLMSchema() json.RawMessage {
	data, err := json.Marshal(s.llmSchema())
	if err != nil {
		panic(fmt.Sprintf("extract: marshal LLM schema: %v", err)) // plain structs cannot fail
	}
	return data
}

func (s *Schema) llmSchema() *jsonSchema {
	closed := false
	line := &jsonSchema{Type: []string{"integer", "null"}, Description: "index of the OCR line (the number after L) the value was read from"}
	fields := &jsonSchema{Type: []string{"object"}, Properties: map[string]*jsonSchema{}, AdditionalProperties: &closed}
	for _, f := range s.Fields {
		value := &jsonSchema{Type: []string{"string", "null"}, Description: f.Description}
		if value.Description == "" {
			value.Description = strings.ReplaceAll(f.Name, "_", " ")
		}
		if f.Type == TypeDate {
			value.Description += " (copy the date as printed)"
		}
		if len(f.Enum) > 0 {
			for _, e := range f.Enum {
				value.Enum = append(value.Enum, e)
			}
			value.Enum = append(value.Enum, nil)
		}
		fields.Properties[f.Name] = &jsonSchema{
			Type:                 []string{"object"},
			Properties:           map[string]*jsonSchema{"value": value, "line": line},
			Required:             []string{"value", "line"},
			AdditionalProperties: &closed,
		}
		fields.Required = append(fields.Required, f.Name)
	}
	pair := &jsonSchema{
		Type: []string{"object"},
		Properties: map[string]*jsonSchema{
			"key":   {Type: []string{"string"}},
			"value": {Type: []string{"string"}},
			"line":  line,
		},
		Required:             []string{"key", "value", "line"},
		AdditionalProperties: &closed,
	}
	return &jsonSchema{
		Type: []string{"object"},
		Properties: map[string]*jsonSchema{
			"fields": fields,
			"pairs":  {Type: []string{"array"}, Items: pair, Description: "labelled key: value pairs printed in the document"},
		},
		Required:             []string{"fields", "pairs"},
		AdditionalProperties: &closed,
	}
}

// ValidationError says where and why a JSON value does not match a schema.
type ValidationError struct {
	Path   string // JSON pointer-like path, "$" for the root
	Reason string
}

func (e *ValidationError) Error() string { return e.Path + ": " + e.Reason }

// maxDepth bounds the validator's recursion.
const maxDepth = 32

// validate checks v (decoded with json.Decoder.UseNumber) against j. It
// supports type (object, array, string, number, integer, boolean, null),
// properties, required, additionalProperties false, items and enum.
func (j *jsonSchema) validate(v any, path string, depth int) error {
	if depth > maxDepth {
		return &ValidationError{path, "nested too deeply"}
	}
	if len(j.Type) > 0 && !slices.ContainsFunc(j.Type, func(t string) bool { return hasType(v, t) }) {
		return &ValidationError{path, fmt.Sprintf("is %s, want %s", typeName(v), strings.Join(j.Type, " or "))}
	}
	if len(j.Enum) > 0 && !slices.ContainsFunc(j.Enum, func(e any) bool { return jsonEqual(e, v) }) {
		return &ValidationError{path, fmt.Sprintf("value %s is not one of the allowed values", shortJSON(v))}
	}
	switch v := v.(type) {
	case map[string]any:
		for _, r := range j.Required {
			if _, ok := v[r]; !ok {
				return &ValidationError{path, fmt.Sprintf("required property %q is missing", r)}
			}
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			p, ok := j.Properties[k]
			if !ok {
				if j.AdditionalProperties != nil && !*j.AdditionalProperties {
					return &ValidationError{path, fmt.Sprintf("property %q is not allowed", k)}
				}
				continue
			}
			if err := p.validate(v[k], path+"."+k, depth+1); err != nil {
				return err
			}
		}
	case []any:
		if j.Items != nil {
			for i, e := range v {
				if err := j.Items.validate(e, fmt.Sprintf("%s[%d]", path, i), depth+1); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func hasType(v any, t string) bool {
	switch t {
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "null":
		return v == nil
	case "number":
		switch v.(type) {
		case json.Number, float64:
			return true
		}
	case "integer":
		switch n := v.(type) {
		case json.Number:
			if _, err := n.Int64(); err == nil {
				return true
			}
			f, err := n.Float64()
			return err == nil && f == float64(int64(f))
		case float64:
			return n == float64(int64(n))
		}
	}
	return false
}

func typeName(v any) string {
	for _, t := range []string{"null", "object", "array", "string", "boolean", "integer", "number"} {
		if hasType(v, t) {
			return t
		}
	}
	return fmt.Sprintf("%T", v)
}

func jsonEqual(a, b any) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if n, ok := b.(json.Number); ok {
		af, aok := a.(float64)
		f, err := n.Float64()
		return aok && err == nil && af == f
	}
	return a == b
}

func shortJSON(v any) string {
	data, _ := json.Marshal(v)
	if len(data) > 60 {
		return string(data[:60]) + "..."
	}
	return string(data)
}
