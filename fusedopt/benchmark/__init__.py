"""fusedopt's benchmark runner: `python -m fusedopt bench` (cli.py).

  workloads.py        the parameter sets (model-shaped and synthetic)
  implementations.py  the AdamW implementations compared, and whether each runs here
  amp_pipelines.py    the AMP + clip + AdamW step as users write it
  steps.py            what is timed: the AdamW step alone, the whole AMP step
  memory.py           whether a workload fits, and how its entries share memory
  timing.py           wall clock on the CPU, CUDA events and L2 flushes on a GPU
  measure.py          one step on one workload, implementations alternating per round
  worker.py, run.py   a whole run (on the CPU each measurement in a fresh process)
  report.py, plot.py  the terminal table, the markdown tables, the PNG
  fsdp_step.py        the optimizer step of an FSDP2 model (run under torchrun)

It ships in the wheel: nothing here imports from the source tree's bench/ or
tests/. bench/'s pytest-benchmark suites import the pieces from here.
"""
