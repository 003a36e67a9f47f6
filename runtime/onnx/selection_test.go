package onnx

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/firmware/accel"
)

// recordedHardware discovers accelerators on one of firmware/accel's
// recorded /proc, /sys and /dev trees.
func recordedHardware(t *testing.T, tree, arch string) Hardware {
	t.Helper()
	found, err := accel.Discover(filepath.Join("..", "..", "firmware", "accel", "testdata", tree))
	if err != nil {
		t.Fatal(err)
	}
	return Hardware{Accels: accel.Kinds(found), Arch: arch}
}

// fakeProviderLibs makes a folder of empty files named as provider
// libraries: availability only looks for the file; ONNX Runtime's own
// check is the try function, which these tests stand in for.
func fakeProviderLibs(t *testing.T, libs ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, l := range libs {
		if err := os.WriteFile(filepath.Join(dir, l), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func acceptAll(string) error { return nil }

func TestSelectionOnFakeHardwareTrees(t *testing.T) {
	cudaLibs := fakeProviderLibs(t, "libonnxruntime_providers_cuda.so", "libonnxruntime_providers_shared.so")
	none := t.TempDir()
	for _, c := range []struct {
		name       string
		hw         Hardware
		dirs       []string
		try        func(string) error
		asked      []string
		chosen     string
		fallback   string
		describeEP []string
	}{{
		name: "recorded H100, CUDA library present", hw: recordedHardware(t, "h100", "amd64"), dirs: []string{none, cudaLibs}, try: acceptAll,
		asked: []string{"cuda", "cpu"}, chosen: "cuda",
	}, {
		name: "recorded H100, no CUDA library", hw: recordedHardware(t, "h100", "amd64"), dirs: []string{none}, try: acceptAll,
		asked: []string{"cuda", "cpu"}, chosen: "cpu",
		fallback: "cuda: CUDA provider library libonnxruntime_providers_cuda.so not present in " + none,
	}, {
		name: "recorded H100, TensorRT asked first, only CUDA present", hw: recordedHardware(t, "h100", "amd64"), dirs: []string{cudaLibs}, try: acceptAll,
		asked: []string{"tensorrt", "cuda"}, chosen: "cuda",
		fallback: "tensorrt: TENSORRT provider library libonnxruntime_providers_tensorrt.so not present in " + cudaLibs,
	}, {
		name: "recorded H100, ONNX Runtime refuses the library", hw: recordedHardware(t, "h100", "amd64"), dirs: []string{cudaLibs},
		try:   func(string) error { return errors.New("libcudnn.so.9: cannot open shared object file") },
		asked: []string{"cuda"}, chosen: "cpu",
		fallback: "cuda: ONNX Runtime cannot use " + filepath.Join(cudaLibs, "libonnxruntime_providers_cuda.so") + ": libcudnn.so.9: cannot open shared object file",
	}, {
		name: "recorded Coral board: library present, no NVIDIA GPU", hw: recordedHardware(t, "coral-pcie", "amd64"), dirs: []string{cudaLibs}, try: acceptAll,
		asked: []string{"CUDA ", "npu9000", "coreml"}, chosen: "cpu",
		fallback: "cuda: no usable NVIDIA GPU found (a GPU, its driver and its /dev node); npu9000: unknown execution provider; coreml: not available on this operating system",
	}, {
		name: "recorded 2-GPU tree on arm64: QNN needs nothing but arm64 and its library", hw: recordedHardware(t, "nvidia-2gpu", "arm64"),
		dirs: []string{fakeProviderLibs(t, "libQnnHtp.so")}, try: acceptAll,
		asked: []string{"openvino", "qnn"}, chosen: "qnn", fallback: "openvino: needs a amd64 CPU, this is arm64",
	}, {
		name: "nothing asked", hw: Hardware{Arch: "amd64"}, dirs: []string{none}, try: acceptAll, chosen: "cpu",
	}, {
		name: "cpu asked first stops the search", hw: recordedHardware(t, "h100", "amd64"), dirs: []string{cudaLibs}, try: acceptAll,
		asked: []string{"cpu", "cuda"}, chosen: "cpu",
	}} {
		t.Run(c.name, func(t *testing.T) {
			avail := availability(c.hw, c.dirs, c.try)
			chosen, fallback := choose(c.asked, avail)
			if chosen != c.chosen || fallback != c.fallback {
				t.Errorf("got %q %q\nwant %q %q", chosen, fallback, c.chosen, c.fallback)
			}
		})
	}
}

// TestRecordedTreesGiveKinds guards the premise of the cases above: the
// recorded trees hold what their names say.
func TestRecordedTreesGiveKinds(t *testing.T) {
	if k := recordedHardware(t, "h100", "amd64").Accels; strings.Join(k, ",") != "cuda" {
		t.Fatalf("h100 kinds %v", k)
	}
	if k := recordedHardware(t, "coral-pcie", "amd64").Accels; strings.Join(k, ",") != "coral" {
		t.Fatalf("coral kinds %v", k)
	}
}
