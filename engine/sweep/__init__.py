"""Sweeps: what spans the jobs of one multirun (parallel jobs, their stop, the final table)."""
