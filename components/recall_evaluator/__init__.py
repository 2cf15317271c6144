"""RecallEvaluator: retrieval metrics (Recall@K, MAP@R, NMI) and ranking pictures.

`metrics` and `ranking_picture` are pure NumPy / scikit-learn / PIL and import
no TFX or TensorFlow, so they can be tested and benchmarked alone.
"""
