"""Hardware readings: the host through psutil and /proc, NVIDIA GPUs through NVML."""
