"""Search over embeddings: pure math, no TFX and no TensorFlow.

``exact`` is exact blocked k-nearest-neighbour search (NumPy); the evaluator's metrics and
the serving side both search through it. Imports only ``core``.
"""
