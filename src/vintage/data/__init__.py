"""Data sets: the packaged wine-quality data, loaders for CSV/Parquet, validation before training."""

from vintage.data.load import Dataset, load_dataset
from vintage.data.packaged import packaged_path
from vintage.data.validate import validate_frame

__all__ = ["Dataset", "load_dataset", "packaged_path", "validate_frame"]
