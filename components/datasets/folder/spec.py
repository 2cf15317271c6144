"""A user's own labelled images: class folders or a CSV, split by a seeded hash of the
class name."""

from core.dataset_spec import DatasetOption, DatasetSpec


def _fraction(value):
    return None if 0.0 < value < 1.0 else f"must be in (0, 1), got {value}"


SPEC = DatasetSpec(
    name="folder",
    description="your own images: one folder per class, or a CSV of path,label",
    files="<class name>/<images> (.jpg, .jpeg, .png), or a CSV path,label (data.labels_csv)",
    sample="--classes class folders of --images-per-class images (stray files among them)",
    class_ranges=None,  # its own protocol: a hash of the class name (eval_fraction, split_seed)
    has_boxes=False,
    options=(
        DatasetOption("labels_csv", "", lambda value: None,
                      "a CSV with the header path,label instead of class folders; "
                      "\"\" = class folders"),
        DatasetOption("eval_fraction", 0.5, _fraction,
                      "share of the classes that go to eval, by a hash of the class name",
                      moves_classes=True),
        DatasetOption("split_seed", 0, lambda value: None,
                      "the seed of that hash", moves_classes=True),
    ),
)
