"""The bottom layer: the typed config, the names shared across the product, and user errors.

Imports nothing of ours; every other package may import it. See docs/architecture.md.
"""
