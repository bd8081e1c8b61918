"""Load a data set (packaged, CSV or Parquet) into a validated :class:`Dataset`.

:func:`load_dataset` reads the file once in chunks of at most :data:`SCAN_ROWS` rows (bounded memory):
each chunk is validated and hashed, so the digest, the row count and the first rows are known without
holding the whole data set in memory. The full pandas frame (:attr:`Dataset.frame`) is kept from that
pass when the file fits one chunk, and read again on first use otherwise; the Spark MLlib trainer never
asks for it, so a data set larger than the driver's memory can be validated and digested there.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vintage.data.packaged import packaged_path
from vintage.data.validate import validate_frame
from vintage.errors import DataError, first_line
from vintage.extras import require

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from vintage.config import DataSpec

UCI_URL = "https://archive.ics.uci.edu/dataset/186/wine+quality"
_PARQUET = {".parquet", ".pq"}
_CSV = {".csv", ".txt", ".tsv"}
SCAN_ROWS = 100_000  # rows per chunk of the validating/digesting pass
HEAD_ROWS = 100  # first rows kept from that pass (input examples, smoke tests)
MIN_HOLDOUT_ROWS = 2  # r2 needs two holdout rows
MIN_TRAIN_ROWS = 2
_HEADER_CHARS = 1 << 20  # the separator is sniffed from at most this much of the first line


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

    def split(
        self, test_size: float, seed: int, *, group_duplicates: bool
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Train/holdout split (:func:`split_rows`). Every consumer (training, gates, the evaluation
        report, ``vintage monitor``) passes the three values of ``data.split``, so all see the same rows."""
        return split_rows(self.frame, test_size, seed, group_duplicates=group_duplicates)


def duplicate_groups(frame: pd.DataFrame) -> np.ndarray[Any, np.dtype[np.intp]]:
    """One group id per row: rows with identical values in every column (features and target) share it.

    Rows are compared by a 64-bit hash of their values (pandas' ``hash_pandas_object``), so two rows
    that differ only by a float's last bit are different rows.
    """
    import numpy as np
    import pandas as pd

    hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    _, inverse = np.unique(hashes, return_inverse=True)
    return np.asarray(inverse, dtype=np.intp).reshape(-1)


@dataclass(frozen=True)
class Duplicates:
    """How many rows repeat another row exactly (features and target).

    Attributes:
        groups: groups of two or more identical rows.
        rows: rows that repeat an earlier one (a group of 3 counts 2).
    """

    groups: int
    rows: int


def count_duplicates(frame: pd.DataFrame) -> Duplicates:
    """The exact duplicate rows of ``frame`` (:func:`duplicate_groups`)."""
    import numpy as np

    sizes = np.bincount(duplicate_groups(frame)) if len(frame) else np.zeros(0, dtype=np.intp)
    return Duplicates(int((sizes > 1).sum()), int(len(frame) - len(sizes)))


def split_rows(
    frame: pd.DataFrame, test_size: float, seed: int, *, group_duplicates: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/holdout split of ``frame``.

    ``group_duplicates=False``: the original tutorial's ``train_test_split`` on whole rows (an exact
    duplicate can land on both sides, and a model that memorises rows scores it with no error).

    ``group_duplicates=True``: identical rows (:func:`duplicate_groups`) go to the same side. The groups
    are drawn in a random order (``seed``) into the holdout while they fit in ``ceil(test_size * n)`` rows
    (``train_test_split``'s holdout size), so the holdout has that many rows whenever single rows are
    left to fill it; both parts come back in a random row order, like ``train_test_split``'s.

    Raises:
        DataError: grouping leaves fewer than :data:`MIN_HOLDOUT_ROWS` holdout or :data:`MIN_TRAIN_ROWS`
            training rows (a data set of few distinct rows).
    """
    if not group_duplicates:
        from sklearn.model_selection import train_test_split

        train, test = train_test_split(frame, test_size=test_size, random_state=seed)
        return train, test
    import numpy as np

    groups = duplicate_groups(frame)
    n, want = len(frame), math.ceil(test_size * len(frame))
    sizes = np.bincount(groups)
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(sizes))
    fits = np.cumsum(sizes[order]) <= want
    prefix = int(np.argmin(fits)) if not fits.all() else len(order)  # groups taken as they come
    taken = np.zeros(len(sizes), dtype=bool)
    taken[order[:prefix]] = True
    total = int(sizes[order[:prefix]].sum())
    for g in order[prefix:]:  # then the next groups that still fit (a single row always does)
        if total >= want:
            break
        if total + sizes[g] <= want:
            taken[g] = True
            total += int(sizes[g])
    if total < MIN_HOLDOUT_ROWS or n - total < MIN_TRAIN_ROWS:
        raise DataError(
            f"the data set has {len(sizes)} distinct rows in {n}: grouping exact duplicates leaves "
            f"{total} holdout and {n - total} training rows (at least {MIN_HOLDOUT_ROWS} and "
            f"{MIN_TRAIN_ROWS} are needed)",
            hint="use a larger data set, or set data.split.group_duplicates: false in vintage.yaml",
        )
    shuffled = rng.permutation(n)
    in_test = taken[groups][shuffled]
    return frame.iloc[shuffled[~in_test]], frame.iloc[shuffled[in_test]]


def load_dataset(spec: DataSpec) -> Dataset:
    """Read the data set the spec names and validate it, in bounded memory (chunk by chunk).

    Raises:
        DataError: the path is missing, not a regular file or Parquet directory, or unreadable; two
            columns share a name; the data fails validation (every problem listed; for data larger than
            one chunk, the problems of the first chunk that has any); it has too few rows to split
            (:func:`check_split_size`).
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
    check_split_size(n_rows, spec.split.test_size, source)
    return Dataset(
        features, target, source, digest.hexdigest()[:16], uri, n_rows, path, first,
        [whole] if whole is not None and chunks == 1 else [],
    )  # fmt: skip


def _row_hashes(clean: pd.DataFrame) -> bytes:
    import pandas as pd

    return bytes(pd.util.hash_pandas_object(clean, index=False).to_numpy().tobytes())


def min_rows(test_size: float, min_train: int = MIN_TRAIN_ROWS) -> int:
    """The fewest rows a ``test_size`` split (``train_test_split``'s rounding: the holdout gets
    ``ceil(test_size * n)`` rows) turns into at least :data:`MIN_HOLDOUT_ROWS` holdout rows and
    ``min_train`` training rows."""
    n = min_train + MIN_HOLDOUT_ROWS
    while math.ceil(test_size * n) < MIN_HOLDOUT_ROWS or n - math.ceil(test_size * n) < min_train:
        n += 1
    return n


def check_split_size(
    n_rows: int,
    test_size: float,
    source: str,
    *,
    min_train: int = MIN_TRAIN_ROWS,
    why: str = "",
    setting: str = "data.split.test_size",
) -> None:
    """Refuse a data set too small for the train/holdout split (and ``min_train`` training rows).

    ``why`` says why ``min_train`` rows are needed; ``setting`` is the vintage.yaml key the hint names.

    Raises:
        DataError: naming the row count and the minimum.
    """
    need = min_rows(test_size, min_train)
    if n_rows >= need:
        return
    raise DataError(
        f"the data set {source} has {n_rows} row{'s' if n_rows != 1 else ''}, too few to split and train: "
        f"at least {need} are needed (data.split.test_size {test_size:g} must leave "
        f"{MIN_HOLDOUT_ROWS} holdout rows and {min_train} training rows{why})",
        hint=f"use a larger data set, or change {setting} in vintage.yaml; nothing was trained",
    )


def _describe(mode: int) -> str:
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


_NOT_A_FILE_HINT = "point data.path at a CSV or Parquet file, or at a directory of Parquet files"


def _parquet_dir(path: Path) -> list[Path]:
    """Check that directory ``path`` is a Parquet data set: at least one Parquet file (magic ``PAR1``),
    nothing else but the hidden or ``_``-prefixed files Parquet readers skip (``_SUCCESS``, ``.crc``).
    Nothing but regular files is opened, so a FIFO or device inside cannot hang the read.

    Raises:
        DataError: naming the first entry that is not a Parquet file, or the empty directory.

    Returns:
        The Parquet files, in path order.
    """
    found: list[Path] = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for name in sorted(f for f in files if not f.startswith((".", "_"))):
            file = Path(root, name)
            shown = file.relative_to(path).as_posix()
            try:
                mode = file.stat().st_mode
                if not stat.S_ISREG(mode):
                    raise DataError(
                        f"data directory {path} holds {shown}, which is {_describe(mode)}",
                        hint=_NOT_A_FILE_HINT,
                    )
                with file.open("rb") as fh:
                    magic = fh.read(4)
            except OSError as exc:
                raise DataError(f"cannot read {shown} in data directory {path}: {first_line(exc)}") from exc
            if magic != b"PAR1":
                raise DataError(
                    f"data path {path} is a directory but {shown} in it is not a Parquet file",
                    hint=_NOT_A_FILE_HINT + " (only Parquet files in it)",
                )
            found.append(file)
    if not found:
        raise DataError(f"data path {path} is a directory with no Parquet files in it", hint=_NOT_A_FILE_HINT)
    return found


def data_kind(path: Path) -> str:
    """``"csv"`` or ``"parquet"``: how the file (or directory of Parquet files) at ``path`` is read.

    Only a regular file or a directory of Parquet files is accepted: a device (``/dev/zero``), a named
    pipe or a socket would block or never end, so it is refused before anything is opened.

    Raises:
        DataError: the path is missing, of another kind, or has an unsupported suffix.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}", hint="check data.path in vintage.yaml") from None
    except OSError as exc:
        raise DataError(f"cannot read data path {path}: {first_line(exc)}") from exc
    if stat.S_ISDIR(mode):
        _parquet_dir(path)
        return "parquet"
    if not stat.S_ISREG(mode):
        raise DataError(f"data path {path} is {_describe(mode)}, not a regular file", hint=_NOT_A_FILE_HINT)
    suffix = path.suffix.lower()
    if suffix in _PARQUET:
        return "parquet"
    if suffix in _CSV or not suffix:
        return "csv"
    raise DataError(
        f"unsupported data file type {suffix!r} ({path.name})",
        hint="use a .csv (comma or semicolon separated) or a .parquet file",
    )


def check_unique_columns(names: Sequence[object], path: Path) -> None:
    """Refuse a header that names a column twice (pandas would read the second as ``x.1``, Spark as
    ``x1``, and a model trained on it would see other data than the file says).

    Raises:
        DataError: naming every repeated column and its positions (counted from 1).
    """
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(names, start=1):
        if str(name).strip():  # blank header cells are read as distinct 'Unnamed: i' columns
            positions.setdefault(str(name), []).append(i)
    repeated = {n: at for n, at in positions.items() if len(at) > 1}
    if not repeated:
        return
    listed = ", ".join(f"{n!r} (columns {', '.join(map(str, at))})" for n, at in repeated.items())
    raise DataError(
        f"invalid data in {path.name}: duplicate column name{'s' if len(repeated) > 1 else ''} {listed}",
        hint="give every column of the data file its own name; nothing was trained",
    )


def _parquet_dataset(path: Path) -> Any:
    """The Parquet file or directory at ``path`` as a ``pyarrow.dataset`` (the files pandas reads), its
    column names checked (:func:`check_unique_columns`)."""
    require("scoring", f"Parquet data ({path.name})")
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    try:
        data = pads.dataset(str(path), format="parquet")
    except pa.ArrowInvalid as exc:
        if "duplicate field" not in str(exc):
            raise
        # pyarrow refuses to unify such a schema without naming the columns: find them in the files.
        for file in _parquet_dir(path) if path.is_dir() else [path]:
            check_unique_columns(pq.read_schema(file).names, path)
        raise
    check_unique_columns(data.schema.names, path)
    return data


def _csv_header(path: Path, sep: str) -> list[str]:
    import pandas as pd

    header = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False)
    return [str(c) for c in header.iloc[0]] if len(header) else []


def _read_chunks(path: Path, required: list[str]) -> Iterator[pd.DataFrame]:
    """The file as :func:`read_table` reads it, in chunks of at most :data:`SCAN_ROWS` rows.

    Parquet chunks carry only the ``required`` columns (all of them, or the file's columns when some are
    missing, so validation names them). A file with no rows yields one empty chunk.
    """
    import pandas as pd

    kind = data_kind(path)
    try:
        if kind == "csv":
            sep = sniff_separator(path)
            check_unique_columns(_csv_header(path, sep), path)
            yield from pd.read_csv(path, sep=sep, chunksize=SCAN_ROWS)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = _parquet_dataset(path)  # the files pandas.read_parquet reads, in order
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

    kind = data_kind(path)
    try:
        if kind == "parquet":
            _parquet_dataset(path)  # checks the column names
            return pd.read_parquet(path)
        sep = sniff_separator(path)
        check_unique_columns(_csv_header(path, sep), path)
        return pd.read_csv(path, sep=sep)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read data file {path.name}: {first_line(exc, 200)}") from exc


def sniff_separator(path: Path) -> str:
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        header = fh.readline(_HEADER_CHARS)
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
