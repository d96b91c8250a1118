"""Exact per-group statistics of values that arrive in batches.

``nsys stats`` prints, per name, the count, total, mean, median, minimum, maximum
and sample standard deviation of durations. :class:`GroupedValues` takes rows a
batch at a time (from an SQL query, or from the event batches that extraction
writes anyway), gives every distinct key tuple a dense code, and keeps each value
as one ``int64`` that packs the group code above the value. One in-place sort
per value column then orders rows by group and value at once, which yields every
statistic exactly, the median included, at 8 bytes per value.

Given a spill folder, a column past ``SORT_BUDGET`` values waits on disk and is
sorted a key range at a time, so memory stays bounded. Values that do not pack
(negative, or over 2**40) are rare and kept in memory, sorted on two keys.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

NULL_KEY = np.iinfo("int64").min  # stands for a NULL integer key; sorts first, as SQLite's NULL
VALUE_BITS = 40  # values in [0, 2**40) ns (18 minutes) pack beside their group code
CODE_LIMIT = 1 << (62 - VALUE_BITS)
SORT_BUDGET = 1 << 22  # spilled values sorted at once (32 MiB); more are taken a key range at a time
VALUE_MASK = (1 << VALUE_BITS) - 1

STATISTICS = ("n", "total", "mean", "median", "lo", "hi", "stddev")


def int_column(column: pa.Array | pa.ChunkedArray, null: int = -1) -> np.ndarray:
    """An integer column as int64 numpy (often a view of the batch), NULL as ``null``."""
    if column.null_count:
        column = pc.fill_null(column, null)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype="int64")


def read_chunks(path: Path, dtype: np.dtype | str, count: int) -> Iterator[np.ndarray]:
    """The records of a spill file, ``count`` at a time."""
    with path.open("rb") as handle:
        while len(records := np.fromfile(handle, dtype=dtype, count=count)):
            yield records


def bin_shift(low: int, high: int, bits: int = 16) -> int:
    """Bins of 2**shift units split [low, high] into at most about 2**bits bins, for a histogram."""
    return max(0, (high - low).bit_length() - bits)


def _key_numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A key column as numpy, NULL as ``NULL_KEY`` (integers) or the empty string (text)."""
    text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
    if column.null_count:
        column = pc.fill_null(column, "" if text else NULL_KEY)
    return np.asarray(column.to_numpy(zero_copy_only=False))


class KeyCodes:
    """Dense codes for key tuples seen across batches, numbered in first-seen order."""

    def __init__(self) -> None:
        self.index: dict[tuple[Any, ...], int] = {}

    def encode(self, columns: Sequence[np.ndarray]) -> np.ndarray:
        """The code of each row's key tuple (new tuples get the next codes)."""
        rows = len(columns[0])
        combined = np.zeros(rows, dtype="int64")
        for column in columns:
            inverse, uniques = pd.factorize(column)
            combined *= len(uniques)
            combined += inverse
            combined, _ = pd.factorize(combined)  # renumber: keeps the product of sizes small
            combined = combined.astype("int64")
        groups = int(combined.max()) + 1 if rows else 0
        # factorize numbers groups in order of appearance: the running maximum rises at each first row
        first = np.flatnonzero(np.diff(np.maximum.accumulate(combined), prepend=-1) > 0)
        tuples = zip(*(column[first].tolist() for column in columns))
        codes = np.fromiter((self.index.setdefault(t, len(self.index)) for t in tuples), "int64", groups)
        return codes[combined]

    def keys(self) -> list[tuple[Any, ...]]:
        """Key tuples in code order."""
        return list(self.index)


class SpillBuffer:
    """Arrays appended in memory up to ``budget`` rows; past it, all of them go to ``path`` (in order).

    Small scans never touch the disk; large ones hold nothing but the file handle.
    """

    def __init__(self, path: Path | None, budget: int) -> None:
        self.path, self.budget = path, budget
        self.chunks: list[np.ndarray] = []
        self.size = 0
        self.handle: BinaryIO | None = None

    @property
    def spilled(self) -> bool:
        return self.handle is not None

    def append(self, array: np.ndarray) -> None:
        self.size += len(array)
        if self.handle is None and self.path is not None and self.size > self.budget:
            self.handle = self.path.open("wb")
            for chunk in self.chunks:
                chunk.tofile(self.handle)
            self.chunks = []
        if self.handle is not None:
            array.tofile(self.handle)
        else:
            self.chunks.append(array)

    def close(self) -> None:
        """Stop appending; spilled rows are then read back from ``path``."""
        if self.handle is not None:
            self.handle.close()


class _Values:
    """One value column's (code, value) pairs, packed into one int64 each where they fit.

    With a ``spill`` file, pairs beyond ``SORT_BUDGET`` go to disk (8 bytes each) and return only
    to be sorted a key range at a time, so memory does not grow with the rows.
    """

    def __init__(self, spill: Path | None = None) -> None:
        self.buffer = SpillBuffer(spill, SORT_BUDGET)
        self.wide: list[tuple[np.ndarray, np.ndarray]] = []
        self.low, self.high = np.iinfo("int64").max, np.iinfo("int64").min  # of the packed values

    def add(self, codes: np.ndarray, values: np.ndarray) -> None:
        if not len(values):
            return
        if int(values.min()) >= 0 and int(values.max()) <= VALUE_MASK and int(codes.max()) < CODE_LIMIT:
            packed = codes << VALUE_BITS
            packed |= values
            self.low, self.high = min(self.low, int(packed.min())), max(self.high, int(packed.max()))
            self.buffer.append(packed)
        else:
            self.wide.append((codes.copy(), np.array(values, dtype="int64")))

    def statistics(self, groups: int) -> dict[str, np.ndarray]:
        """The statistics of every group (see :func:`statistics`).

        Spilled values beyond ``SORT_BUDGET`` are sorted a key range at a time, straight from
        the spill file, so memory stays bounded whatever the row count.
        """
        buffer = self.buffer
        buffer.close()
        if buffer.spilled and buffer.path is not None:
            if not self.wide:
                try:
                    return _ranged_statistics(buffer.path, groups, SORT_BUDGET, self.low, self.high)
                finally:
                    buffer.path.unlink(missing_ok=True)
            buffer.chunks = [np.fromfile(buffer.path, dtype="int64")]  # with unpackable values: all in memory
            buffer.path.unlink()
        values, starts = self.sorted_values(groups)
        return statistics(values, starts)

    def sorted_values(self, groups: int) -> tuple[np.ndarray, np.ndarray]:
        """Values ordered by (group, value) and where each group starts (``groups + 1`` bounds)."""
        bounds = np.arange(groups + 1, dtype="int64")
        chunks, self.buffer.chunks = self.buffer.chunks, []
        if self.wide:  # a negative or huge value: order by two keys instead of one
            for packed in chunks:
                self.wide.append((packed >> VALUE_BITS, packed & VALUE_MASK))
            chunks = []
            codes = np.concatenate([c for c, _ in self.wide])
            values = np.concatenate([v for _, v in self.wide])
            self.wide = []
            order = np.lexsort((values, codes))
            codes, values = codes[order], values[order]
            return values, np.searchsorted(codes, bounds)
        total = sum(len(p) for p in chunks)
        packed = np.empty(total, dtype="int64")
        at = 0
        while chunks:  # move chunk by chunk, releasing each: the copy costs one chunk
            chunk = chunks.pop(0)
            packed[at : at + len(chunk)] = chunk
            at += len(chunk)
        packed.sort()
        starts = np.searchsorted(packed, bounds << VALUE_BITS)
        packed &= VALUE_MASK
        return packed, starts


def bin_ranges(histogram: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive histogram bins joined into ranges of at most ``budget`` (a single bin may hold more)."""
    ranges, first_bin, held = [], 0, 0
    for bin_index, size in enumerate(histogram.tolist()):
        if held and held + size > budget:
            ranges.append((first_bin, bin_index))
            first_bin, held = bin_index, 0
        held += size
    ranges.append((first_bin, len(histogram)))
    return ranges


def write_partitions(records: np.ndarray, partition: np.ndarray, handles: Sequence[IO[bytes]]) -> None:
    """Append each record to the file of its partition (order kept within a partition)."""
    if len(handles) == 1:
        records.tofile(handles[0])
        return
    order = np.argsort(partition, kind="stable")
    bounds = np.searchsorted(partition[order], np.arange(len(handles) + 1))
    for p, handle in enumerate(handles):
        records[order[bounds[p] : bounds[p + 1]]].tofile(handle)


def _ranged_statistics(path: Path, groups: int, budget: int, low: int, high: int) -> dict[str, np.ndarray]:
    """:func:`statistics` of packed values on disk, holding about ``budget`` of them at a time.

    ``low`` and ``high`` bound the packed keys. A first pass counts and sums each group exactly
    and makes a histogram of the packed keys; consecutive histogram bins are then joined into
    key ranges of at most ``budget`` values (a single bin may hold more), a second pass writes
    each value to the file of its range, and each range is read, sorted and reduced in key
    order, so the median is picked at its rank and the squared deviations are summed in value
    order. The input file is consumed.
    """
    counts, totals, shift, histogram = _count_and_bin(path, groups, budget, low, high)
    parts = _file_by_key_range(path, budget, low, shift, histogram)
    reduction = _RangeReduction(counts, totals)
    for file in parts:
        part = np.fromfile(file, dtype="int64")
        file.unlink()
        reduction.add(part)
        del part
    return reduction.result()


def _count_and_bin(
    path: Path, groups: int, budget: int, low: int, high: int
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Count and exact total per group, and a histogram of the packed keys over bins of 2**shift."""
    counts = np.zeros(groups, dtype="int64")
    totals = np.zeros(groups, dtype="int64")
    shift = bin_shift(low, high)
    histogram = np.zeros(((high - low) >> shift) + 1, dtype="int64")
    for chunk in read_chunks(path, "int64", budget):
        codes = chunk >> VALUE_BITS
        counts += np.bincount(codes, minlength=groups)
        np.add.at(totals, codes, chunk & VALUE_MASK)
        histogram += np.bincount((chunk - low) >> shift, minlength=len(histogram))
    return counts, totals, shift, histogram


def _file_by_key_range(path: Path, budget: int, low: int, shift: int, histogram: np.ndarray) -> list[Path]:
    """Each packed value moved to the file of its key range, ranges in key order (``path`` is consumed)."""
    ranges = bin_ranges(histogram, budget)
    range_starts = np.array([low + (first << shift) for first, _ in ranges], dtype="int64")
    parts = [path.with_name(f"{path.name}.{i}") for i in range(len(ranges))]
    handles = [part.open("wb") for part in parts]
    try:
        for chunk in read_chunks(path, "int64", budget):
            write_partitions(chunk, np.searchsorted(range_starts, chunk, side="right") - 1, handles)
    finally:
        for handle in handles:
            handle.close()
    path.unlink()
    return parts


class _RangeReduction:
    """Median, extremes and deviation per group, from packed values handed over one key range at a time."""

    def __init__(self, counts: np.ndarray, totals: np.ndarray) -> None:
        groups = len(counts)
        self.counts, self.totals = counts, totals
        self.mean = np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)
        self.ranks = ((counts - 1) // 2, counts // 2)
        self.picked = [np.zeros(groups, dtype="int64"), np.zeros(groups, dtype="int64")]
        self.lo, self.hi = np.full(groups, np.nan), np.full(groups, np.nan)
        self.squares = np.zeros(groups)
        self.seen = np.zeros(groups, dtype="int64")
        self.bounds = np.arange(groups + 1, dtype="int64") << VALUE_BITS

    def add(self, part: np.ndarray) -> None:
        """The packed values of the next key range (sorted and unpacked in place)."""
        part.sort()
        starts = np.searchsorted(part, self.bounds)
        part &= VALUE_MASK
        n = np.diff(starts)
        here = np.flatnonzero(n)
        begin, size = starts[here], n[here]
        self.lo[here] = np.where(self.seen[here] == 0, part[begin], self.lo[here])
        self.hi[here] = part[begin + size - 1]
        for rank, values in zip(self.ranks, self.picked):
            local = rank[here] - self.seen[here]
            inside = (local >= 0) & (local < size)
            values[here[inside]] = part[begin[inside] + local[inside]]
        deviation = part - np.repeat(self.mean[here], size)
        deviation *= deviation
        self.squares[here] += np.add.reduceat(deviation, begin)
        self.seen[here] += size

    def result(self) -> dict[str, np.ndarray]:
        counts, present = self.counts, self.counts > 0
        return {
            "n": counts,
            "total": self.totals,
            "mean": self.mean,
            "median": np.where(present, (self.picked[0] + self.picked[1]) / 2.0, np.nan),
            "lo": self.lo,
            "hi": self.hi,
            "stddev": np.where(counts > 1, np.sqrt(self.squares / np.maximum(counts - 1, 1)), 0.0),
        }


def statistics(values: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
    """count, total, mean, median, lo, hi and stddev per group of values sorted within groups.

    Sums are exact integer sums; the median of an even count is the mean of the two middle
    values; the deviation is two-pass and summed in value order. A group without values has
    count 0, total 0, NaN statistics and deviation 0.0 (nsys prints 0.0 for one value or none).
    """
    groups = len(starts) - 1
    n = np.diff(starts)
    present = np.flatnonzero(n)
    first, counts = starts[present], n[present]
    out = {
        "n": n.astype("int64"),
        "total": np.zeros(groups, dtype="int64"),
        "mean": np.full(groups, np.nan),
        "median": np.full(groups, np.nan),
        "lo": np.full(groups, np.nan),
        "hi": np.full(groups, np.nan),
        "stddev": np.zeros(groups),
    }
    if not len(present):
        return out
    total = np.add.reduceat(values, first)
    mean = total / counts
    deviation = values - np.repeat(mean, counts)
    deviation *= deviation
    squares = np.add.reduceat(deviation, first)
    del deviation
    out["total"][present] = total
    out["mean"][present] = mean
    out["median"][present] = (values[first + (counts - 1) // 2] + values[first + counts // 2]) / 2.0
    out["lo"][present] = values[first]
    out["hi"][present] = values[first + counts - 1]
    out["stddev"][present] = np.where(counts > 1, np.sqrt(squares / np.maximum(counts - 1, 1)), 0.0)
    return out


class GroupedValues:
    """Per key tuple: the statistics of each value column, fed one batch at a time.

    NULL values are left out of that value's statistics; NULL keys form their own group.
    """

    def __init__(self, keys: Sequence[str], values: Sequence[str], spill: Path | None = None) -> None:
        """``spill``: a folder where values wait on disk until :meth:`frame` (see ``_Values``)."""
        self.key_names, self.value_names = tuple(keys), tuple(values)
        self.codes = KeyCodes()
        if spill is not None:
            spill.mkdir(parents=True, exist_ok=True)
        self.values = {v: _Values(spill / f"{id(self)}-{v}.int64" if spill is not None else None) for v in values}

    def add_batch(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Add the rows of a batch that has the key and value columns by name."""
        if not batch.num_rows:
            return
        codes = self.codes.encode([_key_numpy(batch.column(k)) for k in self.key_names])
        for name in self.value_names:
            self.add_values(name, codes, batch.column(name))

    def add_values(self, name: str, codes: np.ndarray, column: pa.Array | pa.ChunkedArray | np.ndarray) -> None:
        """Add one value column for rows whose group codes are known (NULLs dropped)."""
        if isinstance(column, np.ndarray):
            self.values[name].add(codes, column.astype("int64", copy=False))
            return
        if column.null_count:
            valid = column.is_valid().to_numpy(zero_copy_only=False)
            codes, column = codes[valid], column.drop_null()
        self.values[name].add(codes, int_column(column))

    def frame(self) -> pd.DataFrame:
        """Key columns (ascending, NULL first) and ``{value}_{statistic}`` columns, one row per group."""
        keys = self.codes.keys()
        order = sorted(range(len(keys)), key=keys.__getitem__)
        result = pd.DataFrame(index=pd.RangeIndex(len(keys)))
        for i, name in enumerate(self.key_names):
            listed = [keys[j][i] for j in order]
            text = bool(listed) and isinstance(listed[0], str)
            column = np.array(listed, dtype=object if text else "int64")
            if column.dtype.kind in "iu" and (null := column == NULL_KEY).any():
                column = column.astype(object)
                column[null] = None
            result[name] = column
        with ThreadPoolExecutor(max_workers=2) as pool:  # two columns at a time: numpy sorts release the GIL
            computed = list(pool.map(lambda name: self.values[name].statistics(len(keys)), self.value_names))
        for name, stats in zip(self.value_names, computed):
            for statistic in STATISTICS:
                result[f"{name}_{statistic}"] = stats[statistic][order]
        return result


def sqlite_round(value: float, decimals: int = 1) -> float:
    """Round half away from zero on the exact binary value, as SQLite's round() (and so nsys stats) does."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    quantum = Decimal(1).scaleb(-decimals)
    return float(Decimal(float(value)).quantize(quantum, rounding=ROUND_HALF_UP))


class IntervalUnion:
    """A union of intervals, merged and sorted, answering "is this instant covered?" for many instants at once."""

    def __init__(self, starts: np.ndarray, ends: np.ndarray) -> None:
        order = np.argsort(starts, kind="stable")
        starts, ends = starts[order], np.maximum.accumulate(ends[order]) if len(ends) else ends
        fresh = np.concatenate(([True], starts[1:] > ends[:-1])) if len(starts) else np.zeros(0, dtype=bool)
        group = np.cumsum(fresh) - 1
        self.starts = starts[fresh]
        self.ends = np.zeros(len(self.starts), dtype="int64")
        np.maximum.at(self.ends, group, ends)

    def covers(self, times: np.ndarray) -> np.ndarray:
        at = np.searchsorted(self.starts, times, side="right") - 1
        return (at >= 0) & (times < self.ends[np.maximum(at, 0)]) if len(self.starts) else np.zeros(len(times), bool)

    def bounds(self) -> np.ndarray:
        return np.concatenate([self.starts, self.ends])

    @property
    def length(self) -> int:
        """Total length of the union."""
        return int((self.ends - self.starts).sum())
