//go:build !linux || !cgo

package ocr

// trimHeap does nothing where glibc's malloc_trim is not available.
func trimHeap() {}
