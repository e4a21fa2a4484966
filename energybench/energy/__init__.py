"""Energy measurement: named windows, GPU counters, samplers."""
