package onnx

import (
	"os"
	"path/filepath"
	goruntime "runtime"
)

// The plugin's environment: libonnxruntime's path, a folder of provider
// libraries supplied apart from it (Options.ProviderDir), and the root
// accelerators are discovered under (Options.HardwareRoot; tests point it
// at a recorded tree).
const (
	LibraryEnv      = "FLOTILLA_ORT_LIB"
	ProvidersEnv    = "FLOTILLA_ORT_PROVIDERS"
	HardwareRootEnv = "FLOTILLA_HW_ROOT"
)

// CachedVersion is the ONNX Runtime release `make deps` caches.
const CachedVersion = "1.30.0"

// DefaultLibrary is $FLOTILLA_ORT_LIB, or else the library `make deps`
// caches under the user's cache folder for this architecture.
func DefaultLibrary() string {
	if p := os.Getenv(LibraryEnv); p != "" {
		return p
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[goruntime.GOARCH]
	if arch == "" {
		return ""
	}
	return filepath.Join(dir, "flotilla", "onnxruntime", CachedVersion, "linux-"+arch, "libonnxruntime.so.1")
}
