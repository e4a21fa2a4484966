"""The machine under energy/ and power/: NVML boundary, RAPL, the job's GPUs, GPU cards, typed power limits."""
