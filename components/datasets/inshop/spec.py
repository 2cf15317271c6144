"""DeepFashion In-shop Clothes Retrieval: items split by list_eval_partition.txt, queries
against a gallery."""

from core.dataset_spec import DatasetSpec

SPEC = DatasetSpec(
    name="inshop",
    description="DeepFashion In-shop Clothes Retrieval: 52,712 photos of 7,982 items, "
                "queries searched in a gallery",
    files="img.zip, list_eval_partition.txt, optionally list_bbox_inshop.txt",
    sample="--classes items, training and test items, each test item's images split "
           "between query and gallery",
    class_ranges=None,  # its own protocol: list_eval_partition.txt's train/query/gallery
    # Optional (list_bbox_inshop.txt): without that file every box is the whole image.
    has_boxes=True,
)
