"""The retrieval datasets, one folder each, and the parts they share.

``<name>/`` holds a dataset: ``spec.py`` (its ``DatasetSpec``: pure data, imports only
core), ``source.py`` (its original files to records), ``sample.py`` (small data in its
original layout) and a README; ``core.names.DATASETS`` lists the folders. Shared here:
records.py (what a source yields), archive.py and local_files.py (reading archives),
source_dir.py, synthetic.py (the samples' images) and samples.py (``cgd sample-data``).

This ``__init__`` and each dataset folder's import nothing, so that importing a spec (the
config does, by name: ``core.dataset_spec.spec_for``) loads only core. A dataset's folder
never imports another's. Nothing here imports pipeline/, trainer/ or serving/.
"""
