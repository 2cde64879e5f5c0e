"""The evidence and deployment benchmarks, each run as `python -m benchmarks.<name>` from the repository root."""
