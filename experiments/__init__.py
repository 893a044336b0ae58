"""The research harness: baselines and GD-REC on raw data, multi-seed, reports under reports/."""
