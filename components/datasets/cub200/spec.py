"""CUB-200-2011: 200 bird species, split by class ranges, with boxes."""

from core.dataset_spec import ClassRanges, DatasetSpec

SPEC = DatasetSpec(
    name="cub200",
    description="Caltech-UCSD Birds-200-2011: 11,788 photos of 200 bird species, with boxes",
    files="CUB_200_2011.tgz",
    sample="the first --classes class ids, each class's images split half/half by "
           "train_test_split.txt",
    # The retrieval protocol of the literature: species 1-100 train, 101-200 evaluate.
    class_ranges=ClassRanges(num_classes=200, train=(1, 100), eval=(101, 200)),
    has_boxes=True,
)
