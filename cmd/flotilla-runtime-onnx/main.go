//go:build cgo

// Command flotilla-runtime-onnx is the ONNX Runtime plugin: the agent
// starts it (runtime/native) and talks to it over go-plugin gRPC. It is the
// only cgo binary; libonnxruntime is loaded at run time from -ort-lib or
// $FLOTILLA_ORT_LIB. Run by hand it only prints that it is a plugin.
package main

import (
	"cmp"
	"flag"
	"fmt"
	"os"

	"github.com/hashicorp/go-hclog"

	"github.com/flotilla-edge/flotilla/runtime/native"
	"github.com/flotilla-edge/flotilla/runtime/onnx"
)

var version = "dev"

func main() {
	lib := flag.String("ort-lib", onnx.DefaultLibrary(), "path of libonnxruntime.so (env "+onnx.LibraryEnv+")")
	providers := flag.String("ort-providers", os.Getenv(onnx.ProvidersEnv), "folder of execution-provider libraries supplied apart from libonnxruntime (env "+onnx.ProvidersEnv+")")
	hwRoot := flag.String("hw-root", cmp.Or(os.Getenv(onnx.HardwareRootEnv), "/"), "root under which accelerators are discovered (env "+onnx.HardwareRootEnv+")")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("flotilla-runtime-onnx", version)
		return
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "onnx", Level: hclog.Info, Output: os.Stderr, JSONFormat: true})
	rt, err := onnx.OpenWith(*lib, onnx.Options{ProviderDir: *providers, HardwareRoot: *hwRoot})
	if err != nil {
		// go-plugin shows the host our stderr; exiting before the handshake
		// makes the host's start fail with this message.
		fmt.Fprintln(os.Stderr, "flotilla-runtime-onnx:", err)
		os.Exit(1)
	}
	hw, hwErr := rt.Hardware()
	logger.Info("onnxruntime loaded", "version", rt.Version(), "library", *lib, "providers", rt.Describe().ExecutionProviders,
		"accelerators", hw.Accels, "unavailable", rt.Unavailable())
	if hwErr != nil {
		logger.Warn("accelerator discovery", "error", hwErr)
	}
	native.Serve(rt, logger)
	_ = rt.Close()
	_ = onnx.RemoveStaged()
}
