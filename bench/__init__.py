"""fusedopt's pytest-benchmark suites and committed results. The comparison
runner itself is the package's (fusedopt/benchmark, `python -m fusedopt bench`)."""
