"""On-demand benchmarks: ``python -m benchmarks``. Each figure is printed with its ratio to a
baseline measured in the same run; targets are checked here, never in unit tests."""
