"""Search over embeddings: pure math and files, no TFX and no TensorFlow.

``exact`` is exact blocked k-nearest-neighbour search (NumPy); the evaluator's metrics and
the serving side both search through it. ``index`` is the gallery index bound to the
model that made it (exact, or faiss IVF / HNSW above ``gallery_index.exact_below``), saved
atomically with a manifest; ``catalogue`` journals additions and removals by id between
pushes. Imports only ``core``.
"""
