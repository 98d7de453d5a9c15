"""Performance benchmarks: `make bench` (python -m bench) runs every `bench/bench_*.py` module's
`run()` and writes its result dict to build/bench/<name>.json atomically."""
