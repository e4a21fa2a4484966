"""Dispatch: run points and return their outcomes, on this machine (local.py) or as Slurm jobs (slurm.py)."""
