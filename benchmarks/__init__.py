"""zf_attr's benchmarks: the suite (``python -m benchmarks``, cases in :mod:`benchmarks.suite`), its renderer
(``python -m benchmarks.render``) and the specialised studies (``bench_*.py``). See ``benchmarks/README.md``."""
