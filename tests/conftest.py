"""Test configuration. TFT 1.16 needs Keras 2: set before TensorFlow is imported."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
