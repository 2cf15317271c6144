"""Serving: an embedded TF-Serving-compatible model server, its client, gallery search, CLI.

The server, one job per module; each imports only the ones above it:

    errors            typed request errors; THE map to gRPC status and HTTP code
    batching          merges concurrent calls into one (no models, no protocols)
    model_repository  versions on disk, polling, the hot swap           (errors)
    dataplane         protocol-independent validate-and-predict         (errors, model_repository, batching)
    metrics           request counting wrapper, Prometheus text         (errors)
    rest_codec        TF Serving's REST JSON <-> NumPy                  (errors, dataplane)
    grpc_api          PredictionService, ModelService                   (errors, dataplane, metrics)
    rest_api          /v1/models routes, /monitoring page               (errors, dataplane, model_repository,
                                                                         metrics, rest_codec)
    model_server      ModelServer: composes the above, owns threads and ports

Beside it: ``deploy_config`` (TF Serving's config protos, for ``serving/deploy``),
``client`` (gRPC ``EmbeddingClient``), ``index`` (gallery index; exact search with
``components.recall_evaluator.metrics.nearest_neighbours``), ``standin`` (a model
with the trainer's export contract), ``stderr_filter`` (libjpeg's bare lines off
``cgd serve``'s stderr) and ``commands`` (``cgd serve/embed/index/search``).
Of our other packages, serving imports only ``core`` and that one evaluator function.
Who imports serving: ``cli/main.py`` (``commands``, by name) and ``cli/demo.py``
(``client``, ``index``, ``model_server``, ``stderr_filter``).
``tests/test_serving.py`` checks this picture against the imports.
"""
