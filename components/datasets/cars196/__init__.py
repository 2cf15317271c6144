"""The cars196 dataset: spec.py (what it is), source.py (its files to records), sample.py
(small data in its original layout). See README.md."""
