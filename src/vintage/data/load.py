"""Load a data set (packaged, CSV or Parquet) into a validated :class:`Dataset`.

:func:`load_dataset` reads the file once in chunks of at most :data:`SCAN_ROWS` rows (bounded memory):
each chunk is validated and hashed, so the digest, the row count and the first rows are known without
holding the whole data set in memory. The full pandas frame (:attr:`Dataset.frame`) is kept from that
pass when the file fits one chunk, and read again on first use otherwise; the Spark MLlib trainer never
asks for it, so a data set larger than the driver's memory can be validated and digested there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
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
SCAN_ROWS = 100_000  # rows per chunk of the validating/digesting pass
HEAD_ROWS = 100  # first rows kept from that pass (input examples, smoke tests)


@dataclass(frozen=True)
class Dataset:
    """A validated data set: only the feature columns (in spec order) and the target.

    Attributes:
        features: feature column names, in the order the model sees them.
        target: target column name.
        source: where it came from, as shown to people (no machine paths).
        digest: content digest of :attr:`frame` (16 hex chars); same data -> same digest.
        source_uri: what MLflow records as the dataset source (the UCI page for the packaged sets).
        n_rows: number of rows.
        path: the file (or Parquet directory) read.
    """

    features: tuple[str, ...]
    target: str
    source: str
    digest: str
    source_uri: str
    n_rows: int
    path: Path
    _head: pd.DataFrame = field(repr=False, compare=False)
    _frame: list[pd.DataFrame] = field(default_factory=list, repr=False, compare=False)

    @property
    def frame(self) -> pd.DataFrame:
        """Features + target, numeric, no missing values: the whole data set in memory (read on first use
        when it did not fit one chunk of the validating pass)."""
        if not self._frame:
            raw = read_table(self.path)
            self._frame.append(
                validate_frame(raw, features=self.features, target=self.target, source=self.source)
            )
        return self._frame[0]

    def head(self, n: int = 5) -> pd.DataFrame:
        """The first ``n`` (at most :data:`HEAD_ROWS`) rows of :attr:`frame`, without loading the rest."""
        return self._head.head(n).reset_index(drop=True)

    def split(self, test_size: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Train/holdout split, the original tutorial's way (``train_test_split`` on whole rows)."""
        from sklearn.model_selection import train_test_split

        train, test = train_test_split(self.frame, test_size=test_size, random_state=seed)
        return train, test


def load_dataset(spec: DataSpec) -> Dataset:
    """Read the data set the spec names and validate it, in bounded memory (chunk by chunk).

    Raises:
        DataError: the file is missing or unreadable, or the data fails validation (every problem listed;
            for data larger than one chunk, the problems of the first chunk that has any).
    """
    if spec.dataset is not None:
        path, source, uri = packaged_path(spec.dataset), f"wine-quality-{spec.dataset}", UCI_URL
    else:
        assert spec.path is not None  # guaranteed by DataSpec
        path, source, uri = spec.path, spec.path.name, str(spec.path)
    features, target = tuple(spec.features), spec.target
    required = [*features, target]
    digest = hashlib.sha256("\x1f".join(required).encode())
    n_rows = 0
    first: pd.DataFrame | None = None
    whole: pd.DataFrame | None = None
    columns: list[str] = []
    chunks = 0
    for chunk in _read_chunks(path, required):
        columns = [str(c) for c in chunk.columns]
        if len(chunk) == 0:
            continue
        clean = validate_frame(chunk, features=features, target=target, source=source, row_offset=n_rows)
        digest.update(_row_hashes(clean))
        n_rows += len(clean)
        chunks += 1
        if first is None:
            first = clean.head(HEAD_ROWS).copy()
            whole = clean
        else:
            whole = None  # more than one chunk: the frame is read again if someone asks for it
    if first is None:  # no rows (or no columns): the checks report which
        import pandas as pd

        validate_frame(pd.DataFrame(columns=columns), features=features, target=target, source=source)
        raise DataError(f"invalid data in {source}: the data set has no rows")  # pragma: no cover
    return Dataset(
        features, target, source, digest.hexdigest()[:16], uri, n_rows, path, first,
        [whole] if whole is not None and chunks == 1 else [],
    )  # fmt: skip


def _row_hashes(clean: pd.DataFrame) -> bytes:
    import pandas as pd

    return bytes(pd.util.hash_pandas_object(clean, index=False).to_numpy().tobytes())


def _kind(path: Path) -> str:
    if not path.exists():
        raise DataError(f"data file not found: {path}", hint="check data.path in vintage.yaml")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix in _PARQUET:
        return "parquet"
    if suffix in _CSV or not suffix:
        return "csv"
    raise DataError(
        f"unsupported data file type {suffix!r} ({path.name})",
        hint="use a .csv (comma or semicolon separated) or a .parquet file",
    )


def _read_chunks(path: Path, required: list[str]) -> Iterator[pd.DataFrame]:
    """The file as :func:`read_table` reads it, in chunks of at most :data:`SCAN_ROWS` rows.

    Parquet chunks carry only the ``required`` columns (all of them, or the file's columns when some are
    missing, so validation names them). A file with no rows yields one empty chunk.
    """
    import pandas as pd

    kind = _kind(path)
    try:
        if kind == "csv":
            yield from pd.read_csv(path, sep=sniff_separator(path), chunksize=SCAN_ROWS)
            return
        import pyarrow as pa
        import pyarrow.dataset as pads
        import pyarrow.parquet as pq

        data = pads.dataset(str(path), format="parquet")  # the files pandas.read_parquet reads, in order
        names = list(data.schema.names)
        columns = required if all(c in names for c in required) else names
        pending: list[pa.RecordBatch] = []
        rows = 0
        for file in data.files:
            # Streamed column reads (no pre-buffering): a row group is never held twice.
            parquet = pq.ParquetFile(file, buffer_size=1 << 20, pre_buffer=False)
            for batch in parquet.iter_batches(batch_size=SCAN_ROWS, columns=columns, use_threads=False):
                pending.append(batch)
                rows += batch.num_rows
                if rows >= SCAN_ROWS:  # small row groups / part files: gather them up to one chunk
                    yield pa.Table.from_batches(pending).to_pandas()
                    pending, rows = [], 0
        if pending or rows == 0:
            yield pa.Table.from_batches(
                pending, schema=pa.schema([data.schema.field(c) for c in columns])
            ).to_pandas()
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read data file {path.name}: {first_line(exc, 200)}") from exc


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV (comma, or the UCI semicolon format with quoted header), a Parquet file or a directory
    of Parquet files, whole."""
    import pandas as pd

    kind = _kind(path)
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, sep=sniff_separator(path))
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read data file {path.name}: {first_line(exc, 200)}") from exc


def sniff_separator(path: Path) -> str:
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        header = fh.readline()
    counts = {sep: header.count(sep) for sep in (",", ";", "\t")}
    return max(counts, key=lambda s: counts[s]) if any(counts.values()) else ","


def frame_digest(frame: pd.DataFrame) -> str:
    """Content digest over column names and values (row order matters, index does not).

    :func:`load_dataset` computes the same digest chunk by chunk (the row hashes do not depend on other
    rows).
    """
    import pandas as pd

    h = hashlib.sha256("\x1f".join(map(str, frame.columns)).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]
