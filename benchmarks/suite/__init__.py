"""The benchmark suite: every case checks zf_attr's output against its reference, then times both.

Modules: :mod:`.models` (the model zoo and inputs), :mod:`.context` (one run's settings and caches),
:mod:`.gradient` (Deconvnet, neuron projection, Grad-CAM reference), :mod:`.projection` (feature-map
projections against a loop of Captum calls), :mod:`.occlusion` (both engines and the drill-down against Captum),
:mod:`.mining` (top-k mining against plain inference), :mod:`.registry` (which cases a run has) and :mod:`.cli`
(``python -m benchmarks``).
"""
