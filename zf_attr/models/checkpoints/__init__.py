"""Checkpoints shipped with zf_attr (package data: ``*.pt`` state dicts and their ``*.json`` cards)."""
