package accel

// DefaultProbes returns the probes for Linux, one per accelerator kind.
// NVIDIA runs without nvidia-smi; callers that want GPU memory sizes build
// their own list with NVIDIA{SMI: "nvidia-smi"}.
func DefaultProbes() []Probe {
	return []Probe{NVIDIA{}, Coral{}, Hailo{}, Rockchip{}, IntelNPU{}}
}
