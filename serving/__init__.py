"""Serving: an embedded TF-Serving-compatible model server, its client, the search service.

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
    ports             PortsServer: a gRPC and an HTTP port, the poll thread, start/stop (nothing)
    model_server      ModelServer(PortsServer): composes the above          (+ ports)

The search service beside it (``cgd search-serve``, or ``cgd serve --search``):

    search_protocol   its signature and tensor names, default ports       (nothing)
    search_versions   which version directories carry an index, where     (model_repository)
    search_embeddings the embedding server it asks, per-version cache     (client, errors)
    search_service    the (version, index) pair, queries, the catalogue   (errors, model_repository,
                                                                           search_embeddings,
                                                                           search_versions)
    search_grpc       PredictionService (search, gallery_add/_remove),    (errors, grpc_api, metrics,
                      ModelService                                         search_protocol,
                                                                           search_service)
    search_rest       :search, /gallery:add|:remove, status, metrics      (errors, rest_api, rest_codec,
                                                                           metrics, model_repository,
                                                                           search_protocol,
                                                                           search_service)
    search_server     SearchServer(PortsServer): composes the above      (+ ports)
    search_client     SearchClient (gRPC)                                 (client, search_protocol)

Beside them: ``deploy_config`` (TF Serving's config protos, for ``serving/deploy``),
``client`` (gRPC ``EmbeddingClient``), ``index`` (embedding a folder of images for a
``search.index.GalleryIndex``), ``standin`` (a model
with the trainer's export contract) and ``stderr_filter`` (libjpeg's bare lines off
``cgd serve``'s stderr). Of our other packages, serving imports ``core`` and ``search``
(the gallery index, the catalogue).
Who imports serving: ``cli/serving_commands.py`` (``cgd serve/search-serve/embed/index/
search``) and ``cli/demo.py`` (``client``, ``model_server``, ``search_client``,
``search_server``, ``search_versions``, ``stderr_filter``).
``tests/test_architecture.py`` checks this picture against the imports.
"""
