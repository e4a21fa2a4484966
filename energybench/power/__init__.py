"""GPU power limits as a sweep axis: set per point on every GPU of the job, verified, always restored."""
