"""fusedopt's benchmarks: pytest-benchmark suites and the comparison runner."""
