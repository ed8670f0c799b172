//go:build linux && cgo

package ocr

// #include <malloc.h>
import "C"

// trimHeap hands glibc's free heap pages back to the kernel. Tesseract
// allocates and frees tens of megabytes per page; without this, glibc
// keeps the high-water mark of every arena and RSS creeps up over a long
// run although nothing leaks.
func trimHeap() { C.malloc_trim(0) }
