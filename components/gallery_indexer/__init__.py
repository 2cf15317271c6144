"""GalleryIndexer: the candidate's gallery index, built, measured and gated in the pipeline.

After the RecallEvaluator: embeds the gallery through the candidate's own serving
signature, builds a ``search.index.GalleryIndex`` stamped with the candidate's
fingerprint, measures it (ANN recall@k against exact search, end-to-end Recall@K against
labels through the index) and writes the candidate's SavedModel with the index inside
(``assets.extra/gallery_index/``), so that the Pusher publishes model and index as one
version. ``recall`` and ``verdict`` are pure NumPy (no TFX, no TensorFlow).
"""
