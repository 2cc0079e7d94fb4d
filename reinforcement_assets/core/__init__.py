"""The pure core: records, labels, learners, the cycle's decisions, datasets, scoring. No Dagster, no I/O."""
