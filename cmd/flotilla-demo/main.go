// Command flotilla-demo is `make demo`: a control plane, a handful of real
// agents with different labels, the digits model released and rolled out
// in stages, inference traffic, then shifted traffic so drift shows. Flags
// and wiring only; the demo itself is package demo. Ctrl-C stops
// everything.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/flotilla-edge/flotilla/demo"
)

func main() {
	cfg := demo.DefaultConfig()
	flag.StringVar(&cfg.BinDir, "bin", "bin", "folder with flotilla-server, flotilla-agent and flotilla-runtime-onnx")
	flag.StringVar(&cfg.WorkDir, "work", ".demo", "folder for everything the demo writes (emptied first)")
	flag.StringVar(&cfg.ModelDir, "model-dir", envOr("FLOTILLA_DEMO_MODEL_DIR", "../shared/models/digits"),
		"the digits model: model.onnx, train.csv, test.csv, test_expected.csv")
	flag.StringVar(&cfg.ORTLib, "ort-lib", os.Getenv("FLOTILLA_ORT_LIB"), "libonnxruntime for the ONNX plugin")
	flag.IntVar(&cfg.APIPort, "api-port", cfg.APIPort, "server API port (0: any free)")
	flag.IntVar(&cfg.MQTTPort, "mqtt-port", cfg.MQTTPort, "server MQTT port (0: any free)")
	flag.IntVar(&cfg.InferPort, "infer-port", cfg.InferPort, "first agent's inference port; the others take the next")
	flag.IntVar(&cfg.MetricsPort, "metrics-port", cfg.MetricsPort, "first agent's /metrics port; the others take the next")
	flag.Float64Var(&cfg.RatePerDevice, "rate", cfg.RatePerDevice, "inferences per second per device")
	shiftAfter := flag.Duration("shift-after", time.Minute, "shift the traffic this long after the rollout completes")
	stopAfter := flag.Duration("stop-after", 0, "stop after this long (0: at Ctrl-C)")
	flag.Parse()
	cfg.Out = os.Stdout

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *stopAfter > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *stopAfter)
		defer cancel()
	}
	if err := demo.Run(ctx, cfg, *shiftAfter); err != nil {
		fmt.Fprintln(os.Stderr, "flotilla-demo:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
