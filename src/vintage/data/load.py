"""Load a data set (packaged, CSV or Parquet) into a validated :class:`Dataset`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vintage.data.packaged import packaged_path
from vintage.data.validate import validate_frame
from vintage.errors import DataError, first_line

if TYPE_CHECKING:
    import pandas as pd

    from vintage.config import DataSpec

UCI_URL = "https://archive.ics.uci.edu/dataset/186/wine+quality"
_PARQUET = {".parquet", ".pq"}
_CSV = {".csv", ".txt", ".tsv"}


@dataclass(frozen=True)
class Dataset:
    """A validated data set: only the feature columns (in spec order) and the target.

    Attributes:
        frame: features + target, numeric, no missing values.
        features: feature column names, in the order the model sees them.
        target: target column name.
        source: where it came from, as shown to people (no machine paths).
        source_uri: what MLflow records as the dataset source (the UCI page for the packaged sets).
        digest: content digest of ``frame`` (16 hex chars); same data -> same digest.
    """

    frame: pd.DataFrame
    features: tuple[str, ...]
    target: str
    source: str
    digest: str
    source_uri: str

    @property
    def n_rows(self) -> int:
        """Number of rows."""
        return len(self.frame)

    def split(self, test_size: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Train/holdout split, the original tutorial's way (``train_test_split`` on whole rows)."""
        from sklearn.model_selection import train_test_split

        train, test = train_test_split(self.frame, test_size=test_size, random_state=seed)
        return train, test


def load_dataset(spec: DataSpec) -> Dataset:
    """Read the data set the spec names and validate it.

    Raises:
        DataError: the file is missing or unreadable, or the data fails validation (every problem listed).
    """
    if spec.dataset is not None:
        path, source, uri = packaged_path(spec.dataset), f"wine-quality-{spec.dataset}", UCI_URL
    else:
        assert spec.path is not None  # guaranteed by DataSpec
        path, source, uri = spec.path, spec.path.name, str(spec.path)
    frame = read_table(path)
    clean = validate_frame(frame, features=spec.features, target=spec.target, source=source)
    return Dataset(clean, tuple(spec.features), spec.target, source, frame_digest(clean), uri)


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV (comma, or the UCI semicolon format with quoted header) or a Parquet file."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"data file not found: {path}", hint="check data.path in vintage.yaml")
    suffix = path.suffix.lower()
    try:
        if suffix in _PARQUET:
            return pd.read_parquet(path)
        if suffix in _CSV or not suffix:
            return pd.read_csv(path, sep=sniff_separator(path))
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read data file {path.name}: {first_line(exc, 200)}") from exc
    raise DataError(
        f"unsupported data file type {suffix!r} ({path.name})",
        hint="use a .csv (comma or semicolon separated) or a .parquet file",
    )


def sniff_separator(path: Path) -> str:
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        header = fh.readline()
    counts = {sep: header.count(sep) for sep in (",", ";", "\t")}
    return max(counts, key=lambda s: counts[s]) if any(counts.values()) else ","


def frame_digest(frame: pd.DataFrame) -> str:
    """Content digest over column names and values (row order matters, index does not)."""
    import pandas as pd

    h = hashlib.sha256("\x1f".join(map(str, frame.columns)).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]
