"""Benchmarks of the reinforcement loop: scale and cost of a cycle, drift recovery, Supabase reads, sensor ticks.

Each module is one command (`python -m benchmarks.<name> --help`); results go to `benchmarks/results/` as
JSON (with the machine they ran on) and to `docs/` as PNG plots. `docs/benchmarks.md` reports them.
"""
