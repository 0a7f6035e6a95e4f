"""Adapters to other libraries' interfaces (import the submodule you need; each imports only what it uses).

- :mod:`zf_attr.integrations.quantus`: ``explain_func`` for Quantus metrics.
"""

__all__: list[str] = []
