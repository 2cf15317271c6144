"""Stanford Online Products: 22,634 products, split by Ebay_train.txt / Ebay_test.txt."""

from core.dataset_spec import DatasetSpec

SPEC = DatasetSpec(
    name="sop",
    description="Stanford Online Products: 120,053 eBay photos of 22,634 products, no boxes",
    files="Stanford_Online_Products.zip",
    sample="--classes products, the first half in Ebay_train.txt and the rest in Ebay_test.txt",
    class_ranges=None,  # its own protocol: the products of Ebay_train.txt / Ebay_test.txt
    has_boxes=False,
)
