"""Cars196 (Stanford Cars): 196 car models, split by class ranges, with boxes."""

from core.dataset_spec import ClassRanges, DatasetSpec
from core.names import CARS196_FILES

SPEC = DatasetSpec(
    name="cars196",
    description="Stanford Cars: 16,185 photos of 196 car models, with boxes",
    files=", ".join(CARS196_FILES),
    sample="the first --classes class ids, each class's images split half/half between "
           "cars_train and cars_test (--classes 196 --images-per-class 83 --real-size is "
           "Cars196's scale: 16,268 images, 0.9 GB, a few minutes)",
    # The CGD paper's protocol: the first 98 classes train, the other 98 evaluate.
    class_ranges=ClassRanges(num_classes=196, train=(1, 98), eval=(99, 196)),
    has_boxes=True,
    # Its two image archives are 1.9 GB: Beam reads the images inside the inflated tars.
    images_in_archive=True,
    real_size_sample=True,
)
