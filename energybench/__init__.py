"""energybench: what LLM inference costs in energy on your own Slurm cluster, reproducibly."""

__version__ = "0.1.0"
