// Package migrations holds docpipe's schema as goose SQL migrations,
// numbered sequentially and embedded in the binary. It holds nothing else:
// tracking runs them.
package migrations

import "embed"

// FS holds the *.sql migrations at its root.
//
//go:embed *.sql
var FS embed.FS
