"""Measurements (python -m bench.<name>); `hiso` is imported first so that its CPU numerics are pinned before torch
loads (hiso/numerics.py), as in every other entry point."""
import hiso  # noqa: F401
