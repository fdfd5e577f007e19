"""Hand-run performance benchmarks (Table 1 latency, training throughput and memory, task switching, CPU vs peft).

Each is ``python -m benchmarks.NAME --size tiny|small|full [--device cpu|cuda]`` and writes a Markdown + JSON report
to ``results/benchmarks/``. Tests run them at ``--size tiny`` and check the reports, never the timings.
"""
