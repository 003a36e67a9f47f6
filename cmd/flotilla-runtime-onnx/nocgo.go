//go:build !cgo

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "flotilla-runtime-onnx: built without cgo; it needs cgo to load ONNX Runtime")
	os.Exit(1)
}
