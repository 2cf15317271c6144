"""The search service's wire protocol: signature and tensor names, default ports. No imports.

The service speaks TF Serving's own ``PredictionService/Predict``, so that clients
reuse ``tensorflow-serving-api``'s stubs and status codes: ``model_spec.name`` is the
model, ``signature_name`` one of the three below (empty = ``search``), and the
answer's ``model_spec.version`` the version whose model and index answered.

    signature        inputs                                       outputs
    search           images string [N] (encoded, as serving_      ids string [N, k], distances
                     default) or embeddings float [N, D]; k int    float [N, k], metadata string
                     scalar (default 10)                           (JSON) [N, k]
    gallery_add      ids string [N], images string [N],           catalogue_seq int64 scalar
                     metadata string (JSON objects) [N], optional
    gallery_remove   ids string [N]                               catalogue_seq int64 scalar

REST (``serving.search_rest``) says the same in JSON. Light on purpose: ``cgd --help``
reads the default ports here without loading TensorFlow.
"""

SEARCH_SIGNATURE = "search"
ADD_SIGNATURE = "gallery_add"
REMOVE_SIGNATURE = "gallery_remove"
SIGNATURES = (SEARCH_SIGNATURE, ADD_SIGNATURE, REMOVE_SIGNATURE)
EMBEDDINGS_INPUT = "embeddings"
K_INPUT = "k"
IDS = "ids"                 # search's output; gallery_add's and gallery_remove's input
DISTANCES_OUTPUT = "distances"
METADATA = "metadata"       # search's output; gallery_add's input (JSON text per row)
SEQ_OUTPUT = "catalogue_seq"
DEFAULT_K = 10
# The ports `cgd serve --search` and `cgd search-serve` use unless told: beside TF
# Serving's 8500 (gRPC) and 8501 (REST).
DEFAULT_GRPC_PORT = 8510
DEFAULT_REST_PORT = 8511
