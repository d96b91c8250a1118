"""Collective kernels matched across ranks: transfer, waiting (skew), stragglers and setup outliers.

Collectives run in the same order on every rank of a communicator, so the k-th instance of a kind
on one rank and the k-th on another are one instance. A rank is a (device, process) pair. Within an
instance the fastest rank's duration is the transfer, and the rest of each rank's duration is time
spent waiting for the others to arrive (the approach nsys-jax takes): the rank that starts last is
the one the others wait for. A collective kernel that reports a long time is therefore not evidence of
slow links; only transfer time is. A capture may begin or end while some ranks are inside a sequence
(each rank may start its capture range on its own), so each rank's sequence is aligned to the shortest
one by end time, since the ranks of an instance finish together; instances that not every rank holds
are reported as unmatched. One-off giants (a startup barrier) are setup and kept out of the sums.

The collective kernels are read a Parquet batch at a time and held as one row each (tens of bytes),
a small part of the kernels in any real capture.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from llmprof.analysis import tables
from llmprof.analysis.categories import collective_kind
from llmprof.analysis.grouped import int_column
from llmprof.common.outputs import write_table
from llmprof.common.records import (
    CollectiveKind,
    CollectivesSummary,
    CollectiveVerdict,
    Rank,
    RankCollectives,
    RankWait,
    SetupCollective,
)

#: An instance is setup when one of its ranks takes this many times the median of its kind ...
SETUP_RATIO = 100
#: ... and at least this long (10 ms): startup barriers and first-call initialisation, not steady state.
SETUP_MIN_NS = 10_000_000
#: "Communication-bound" may be said only when transfer is more than this share of matched collective time.
TRANSFER_DOMINATES = 0.5
#: Ranks' sequences of a kind are aligned by end time, trying offsets of up to this many instances ...
MAX_ALIGNMENT_SHIFT = 64
#: ... each judged on at most this many evenly spaced instances.
ALIGNMENT_SAMPLE = 1001
READ_ROWS = 1 << 18
NO_PID = -1  # stands for a kernel whose process is unknown
RANK_KEYS = ["device_id", "pid"]
TIMES = ["start_ns", "end_ns", "duration_ns"]
_KERNEL_COLUMNS = ["device_id", "pid", "start_ns", "end_ns", "duration_ns", "short_name", "name", "category"]


def rank(device_id: int, pid: int) -> Rank:
    return {"device_id": int(device_id), "pid": None if pid == NO_PID else int(pid)}


def text_codes(column: pa.Array) -> tuple[np.ndarray, list[str | None]]:
    """Codes (0 for NULL) and the values they stand for, from a text column (dictionary-encoded or not)."""
    if not pa.types.is_dictionary(column.type):
        column = column.dictionary_encode()
    return int_column(column.indices, null=-1) + 1, [None, *column.dictionary.to_pylist()]


class KindCache:
    """:func:`collective_kind` of kernels a batch at a time, once per distinct (short name, name, category)."""

    def __init__(self) -> None:
        self.known: dict[tuple[str | None, str | None, str | None], str | None] = {}

    def kinds(self, batch: pa.RecordBatch) -> np.ndarray:
        """The kind of each kernel of a batch with ``short_name``, ``name`` and ``category`` columns (None: not one)."""
        (short, shorts), (name, names), (category, categories) = (
            text_codes(batch.column(c)) for c in ("short_name", "name", "category")
        )
        combined = (short * len(names) + name) * len(categories) + category
        inverse, uniques = pd.factorize(combined)
        found = []
        for code in uniques.tolist():
            key = (shorts[code // (len(names) * len(categories))], names[code // len(categories) % len(names)])
            triple = (*key, categories[code % len(categories)])
            if triple not in self.known:
                self.known[triple] = collective_kind(*triple)
            found.append(self.known[triple])
        return np.asarray(found, dtype=object)[inverse]


def kernel_batches(kernels: Path, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The kernels table a batch at a time, text columns dictionary-encoded as Parquet stored them."""
    text = [c for c in columns if c in ("short_name", "name", "category")]
    parquet = pq.ParquetFile(kernels, read_dictionary=text)
    yield from parquet.iter_batches(columns=columns, batch_size=READ_ROWS)


class _Labels:
    """Dense ids for the texts met across batches, turned into a categorical sorted by text at the end."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def codes(self, values: np.ndarray) -> np.ndarray:
        inverse, uniques = pd.factorize(values)
        return np.array([self.ids.setdefault(str(u), len(self.ids)) for u in uniques], dtype="int32")[inverse]

    def categorical(self, codes: np.ndarray) -> pd.Categorical[Any]:
        texts = sorted(self.ids)
        position = np.empty(len(texts), dtype="int32")
        position[[self.ids[t] for t in texts]] = np.arange(len(texts), dtype="int32")
        sorted_codes: np.ndarray = position[codes]
        return pd.Categorical.from_codes(sorted_codes, dtype=pd.CategoricalDtype(texts))


def read_collectives(kernels: Path) -> pd.DataFrame:
    """Every collective kernel of a kernels table: kind, short name, rank, start, end and duration (ns).

    Sorted by kind, device, pid, start and end; a kernel without a process has pid ``NO_PID``. Kind and
    name are categoricals (categories in text order), so a row costs about 40 bytes.
    """
    cache, kinds, names = KindCache(), _Labels(), _Labels()
    parts: dict[str, list[np.ndarray]] = {c: [] for c in ["kind", "name", *RANK_KEYS, *TIMES]}
    for batch in kernel_batches(kernels, _KERNEL_COLUMNS):
        found = cache.kinds(batch)
        rows = np.flatnonzero(found != None)  # noqa: E711 (elementwise on an object array)
        if not len(rows):
            continue
        taken = batch.take(pa.array(rows))
        short_codes, shorts = text_codes(taken.column("short_name"))
        parts["kind"].append(kinds.codes(found[rows]))
        parts["name"].append(names.codes(np.array([t or "?" for t in shorts], dtype=object)[short_codes]))
        for column in (*RANK_KEYS, *TIMES):
            parts[column].append(int_column(taken.column(column), null=NO_PID))
    joined = {c: np.concatenate(v) if v else np.zeros(0, dtype="int32") for c, v in parts.items()}
    frame = pd.DataFrame(
        {
            "kind": kinds.categorical(joined["kind"]),
            "name": names.categorical(joined["name"]),
            **{c: joined[c].astype("int64") for c in (*RANK_KEYS, *TIMES)},
        }
    )
    return frame.sort_values(["kind", *RANK_KEYS, "start_ns", "end_ns"], kind="stable", ignore_index=True)


def _best_offset(ends: np.ndarray, reference: np.ndarray) -> int:
    """The offset ``d`` that pairs the reference's k-th instance with this sequence's (k + d)-th: the one whose
    ends lie closest (median distance over at most ``ALIGNMENT_SAMPLE`` pairs), the smallest ``|d|`` on ties.

    Offsets within ``MAX_ALIGNMENT_SHIFT`` (and half the reference) of 0 and of the length difference are
    tried, so a capture that began or ended inside the sequence on either rank is lined up again.
    """
    extra, reach = len(ends) - len(reference), min(MAX_ALIGNMENT_SHIFT, len(reference) // 2)
    offsets = sorted({*range(-reach, reach + 1), *range(extra - reach, extra + reach + 1)}, key=lambda d: (abs(d), d))
    best, best_cost = 0, np.inf
    for offset in offsets:
        first, stop = max(0, -offset), min(len(reference), len(ends) - offset)
        if stop - first < len(reference) - reach:
            continue
        k = np.unique(np.linspace(first, stop - 1, min(stop - first, ALIGNMENT_SAMPLE)).astype("int64"))
        cost = float(np.median(np.abs(ends[k + offset] - reference[k])))
        if cost < best_cost:
            best, best_cost = offset, cost
    return best


def _instances(frame: pd.DataFrame, ordinal: np.ndarray) -> np.ndarray:
    """The matched instance of each collective kernel, -1 where unmatched; ``frame`` as :func:`read_collectives`
    sorts it. Every rank's sequence of a kind is aligned to the shortest one (the first such rank); an instance
    is matched when every rank of the kind holds it, and instances are numbered from 0."""
    instance = np.full(len(frame), -1, dtype="int64")
    ends = frame["end_ns"].to_numpy()
    for _, part in frame.groupby("kind", sort=True, observed=True):
        per_rank = [rows.index.to_numpy() for _, rows in part.groupby(RANK_KEYS, sort=True)]
        if len(per_rank) < 2:
            continue  # one rank: nothing to match against
        reference = ends[min(per_rank, key=len)]
        paired = [(rows, ordinal[rows] - _best_offset(ends[rows], reference)) for rows in per_rank]
        first = max(int(k.min()) for _, k in paired)
        stop = min(int(k.max()) for _, k in paired) + 1
        for rows, k in paired:
            keep = (k >= first) & (k < stop)
            instance[rows[keep]] = k[keep] - first
    return instance


def match_collectives(collectives: pd.DataFrame) -> pd.DataFrame:
    """Match instances across ranks and split each rank's duration into transfer and wait.

    Args:
        collectives: collective kernels as :func:`read_collectives` returns them.

    Returns:
        The same rows with ``ordinal`` (position in its rank's sequence of the kind), ``instance``
        (-1: unmatched), ``transfer_ns`` (the instance's fastest duration; -1 unmatched), ``wait_ns``
        (duration minus transfer; 0 unmatched), ``last_to_arrive`` (started the instance last; the first
        such rank on ties), ``kind_median_ns`` and ``setup`` (a rank of the instance took at least
        ``SETUP_RATIO`` times the kind's median and ``SETUP_MIN_NS``).
    """
    frame = collectives.reset_index(drop=True)
    ordinal = frame.groupby(["kind", *RANK_KEYS], sort=False, observed=True).cumcount().to_numpy(dtype="int64")
    instance = _instances(frame, ordinal)
    frame = frame.assign(ordinal=ordinal, instance=instance)
    duration = frame["duration_ns"].to_numpy()
    matched = frame[instance >= 0]
    by_instance = matched.groupby(["kind", "instance"], sort=False, observed=True)
    transfer = np.full(len(frame), -1, dtype="int64")
    transfer[matched.index.to_numpy()] = by_instance["duration_ns"].transform("min").to_numpy()
    last = np.zeros(len(frame), dtype=bool)
    last[by_instance["start_ns"].idxmax().to_numpy(dtype="int64")] = True
    median = (
        frame.groupby("kind", sort=False, observed=True)["duration_ns"].transform("median").to_numpy(dtype="float64")
    )
    outlier = (duration >= SETUP_RATIO * median) & (duration >= SETUP_MIN_NS)
    setup = outlier.copy()
    if len(matched):
        setup[matched.index.to_numpy()] = (
            pd.Series(outlier[matched.index.to_numpy()], index=matched.index)
            .groupby([matched["kind"], matched["instance"]], sort=False, observed=True)
            .transform("any")
            .to_numpy(dtype=bool)
        )
    return frame.assign(
        transfer_ns=transfer,
        wait_ns=np.where(transfer >= 0, duration - transfer, 0),
        last_to_arrive=last,
        kind_median_ns=median,
        setup=setup,
    )


def _records(frame: pd.DataFrame) -> list[dict[str, int]]:
    return [{str(k): int(v) for k, v in row.items()} for row in frame.to_dict("records")]


def _waits(steady: pd.DataFrame) -> list[RankWait]:
    """Each rank's wait in steady matched instances, charged to the rank that started each instance last;
    largest first."""
    lasts = steady.loc[steady["last_to_arrive"], ["kind", "instance", *RANK_KEYS]]
    joined = steady.merge(lasts.rename(columns={"device_id": "by_device", "pid": "by_pid"}), on=["kind", "instance"])
    others = joined[(joined["device_id"] != joined["by_device"]) | (joined["pid"] != joined["by_pid"])]
    grouped = others.groupby([*RANK_KEYS, "by_device", "by_pid"], sort=True)["wait_ns"].agg(["sum", "size"])
    rows = sorted(_records(grouped.reset_index()), key=lambda r: -r["sum"])  # stable: rank order on ties
    return [
        {
            "waiting": rank(r["device_id"], r["pid"]),
            "straggler": rank(r["by_device"], r["by_pid"]),
            "wait_ns": r["sum"],
            "instances": r["size"],
        }
        for r in rows
    ]


def _rank_parts(part: pd.DataFrame, waits: list[RankWait]) -> list[RankCollectives]:
    """Each rank's share of one kind, in rank order."""
    out: list[RankCollectives] = []
    for _, rows in part.groupby(RANK_KEYS, sort=True):
        device, pid = int(rows["device_id"].iloc[0]), int(rows["pid"].iloc[0])
        matched = (rows["instance"] >= 0).to_numpy()
        steady = matched & ~rows["setup"].to_numpy(dtype=bool)
        ordinal = rows["ordinal"].to_numpy()
        first = int(ordinal[matched].min()) if matched.any() else 0
        me = rank(device, pid)
        out.append(
            {
                "rank": me,
                "instances": len(rows),
                "unmatched_leading": int((~matched & (ordinal < first)).sum()),
                "unmatched_trailing": int((~matched & (ordinal >= first)).sum()),
                "time_ns": int(rows["duration_ns"].sum()),
                "median_duration_ns": float(rows["duration_ns"].median()),
                "transfer_ns": int(rows["transfer_ns"].to_numpy()[steady].sum()),
                "wait_ns": int(rows["wait_ns"].to_numpy()[steady].sum()),
                "last_arrivals": int((rows["last_to_arrive"].to_numpy(dtype=bool) & steady).sum()),
                "caused_wait_ns": sum(w["wait_ns"] for w in waits if w["straggler"] == me),
            }
        )
    return out


def _straggler(ranks: list[RankCollectives], matched_instances: int) -> Rank | None:
    """The rank whose late arrival caused the most waiting (then the most last arrivals; then rank order)."""
    if not matched_instances:
        return None
    return max(ranks, key=lambda r: (r["caused_wait_ns"], r["last_arrivals"], -ranks.index(r)))["rank"]


def _median(values: pd.Series) -> float | None:
    return float(values.median()) if len(values) else None


def _share(transfer: int, wait: int) -> float | None:
    return transfer / (transfer + wait) if transfer + wait else None


def _kind_summary(kind: str, part: pd.DataFrame) -> CollectiveKind:
    """One kind's instances, transfer, wait and straggler."""
    matched = part["instance"] >= 0
    setup = part["setup"].astype(bool)
    steady = part[matched & ~setup]
    per_instance = steady.groupby("instance", sort=True).agg(
        transfer=("transfer_ns", "first"),
        first_start=("start_ns", "min"),
        last_start=("start_ns", "max"),
        first_end=("end_ns", "min"),
        last_end=("end_ns", "max"),
    )
    waits = _waits(steady)
    ranks = _rank_parts(part, waits)
    transfer, wait = int(steady["transfer_ns"].sum()), int(steady["wait_ns"].sum())
    setup_rows = part[setup]
    return {
        "kind": kind,
        "names": sorted(set(part["name"])),
        "ranks": ranks,
        "matched_instances": len(per_instance),
        "setup_instances": int(part.loc[setup & matched, "instance"].nunique()) + int((setup & ~matched).sum()),
        "time_ns": int(part["duration_ns"].sum()),
        "transfer_ns": transfer,
        "wait_ns": wait,
        "unmatched_ns": int(part.loc[~matched & ~setup, "duration_ns"].sum()),
        "setup_ns": int(setup_rows["duration_ns"].sum()),
        "transfer_share": _share(transfer, wait),
        "instance_transfer_ns": int(per_instance["transfer"].sum()),
        "median_skew_ns": _median(per_instance["last_start"] - per_instance["first_start"]),
        "median_end_spread_ns": _median(per_instance["last_end"] - per_instance["first_end"]),
        "straggler": _straggler(ranks, len(per_instance)),
        "waits": waits,
    }


def _setup_list(frame: pd.DataFrame) -> list[SetupCollective]:
    """Setup instances (a matched instance once, with all its ranks; an unmatched kernel alone), by start."""
    setup = frame[frame["setup"].astype(bool)]
    key = np.where(setup["instance"] >= 0, setup["instance"], -1 - setup.index.to_numpy())  # unmatched: own group
    found: list[SetupCollective] = []
    for (kind, _), rows in setup.groupby([setup["kind"], key], sort=True, observed=True):
        instance = int(rows["instance"].iloc[0])
        found.append(
            {
                "kind": str(kind),
                "instance": instance if instance >= 0 else None,
                "start_ns": int(rows["start_ns"].min()),
                "duration_ns": int(rows["duration_ns"].max()),
                "kind_median_ns": float(rows["kind_median_ns"].iloc[0]),
                "ranks": [rank(d, p) for d, p in zip(rows["device_id"].tolist(), rows["pid"].tolist())],
            }
        )
    return sorted(found, key=lambda s: (s["start_ns"], s["kind"]))


def summarise_collectives(matched: pd.DataFrame) -> CollectivesSummary:
    """Every kind of :func:`match_collectives`'s rows, most GPU time first, and the sums over kinds."""
    kinds = [_kind_summary(str(kind), part) for kind, part in matched.groupby("kind", sort=True, observed=True)]
    kinds.sort(key=lambda k: -k["time_ns"])  # stable: kind name on ties

    def total(field: str) -> int:
        return sum(int(k[field]) for k in kinds)  # type: ignore[literal-required,misc]

    steady = matched[(matched["instance"] >= 0) & ~matched["setup"].astype(bool)]
    return {
        "kinds": kinds,
        "time_ns": total("time_ns"),
        "transfer_ns": total("transfer_ns"),
        "wait_ns": total("wait_ns"),
        "unmatched_ns": total("unmatched_ns"),
        "setup_ns": total("setup_ns"),
        "transfer_share": _share(total("transfer_ns"), total("wait_ns")),
        "waits": _waits(steady),
        "setup": _setup_list(matched),
    }


def collectives(stage: Path) -> CollectivesSummary:
    """The collectives of an extract folder (its ``kernels.parquet``), matched and summarised."""
    return summarise_collectives(match_collectives(read_collectives(stage / "kernels.parquet")))


def collective_verdict(summary: CollectivesSummary) -> CollectiveVerdict:
    """Transfer-bound or skew (who waits for whom, with the numbers), from :func:`summarise_collectives`."""
    share = summary["transfer_share"]
    verdict = "none" if share is None else "transfer" if share > TRANSFER_DOMINATES else "skew"
    pair = summary["waits"][0] if verdict == "skew" and summary["waits"] else None
    if pair is None:
        waiting, straggler, kind, own_ns = None, None, None, 0
    else:
        waiting, straggler = pair["waiting"], pair["straggler"]
        in_kinds = [
            (w["wait_ns"], k["kind"])
            for k in summary["kinds"]
            for w in k["waits"]
            if w["waiting"] == waiting and w["straggler"] == straggler
        ]
        kind = max(in_kinds, key=lambda item: item[0])[1]  # the first kind (most time) on ties
        own_ns = sum(
            r["transfer_ns"] + r["wait_ns"] for k in summary["kinds"] for r in k["ranks"] if r["rank"] == waiting
        )
    return {
        "verdict": verdict,
        "transfer_ns": summary["transfer_ns"],
        "wait_ns": summary["wait_ns"],
        "transfer_share": share,
        "waiting": waiting,
        "straggler": straggler,
        "pair_wait_ns": pair["wait_ns"] if pair else 0,
        "pair_instances": pair["instances"] if pair else 0,
        "waiting_collective_ns": own_ns,
        "kind": kind,
    }


def collectives_table(matched: pd.DataFrame) -> pa.Table:
    """The ``collectives`` table (schema :data:`tables.COLLECTIVES`): one row per collective kernel, sorted by
    kind, instance (unmatched last), device, pid and ordinal."""
    unmatched = (matched["instance"] < 0).to_numpy()
    order = np.lexsort(
        [matched[c].to_numpy() for c in ("ordinal", "pid", "device_id", "instance")]
        + [unmatched, matched["kind"].cat.codes.to_numpy()]
    )
    rows = matched.iloc[order]
    gone = unmatched[order]

    def column(name: str, null: np.ndarray | None = None) -> pa.Array:
        values = rows[name].to_numpy()
        return pa.array(values, mask=null, type=tables.COLLECTIVES.field(name).type)

    arrays = {
        name: column(name, gone if name in ("instance", "transfer_ns", "wait_ns") else None)
        for name in tables.COLLECTIVES.names
        if name != "pid"
    }
    arrays["pid"] = column("pid", rows["pid"].to_numpy() == NO_PID)
    return pa.table([arrays[n] for n in tables.COLLECTIVES.names], schema=tables.COLLECTIVES)


def write_collectives(stage: Path) -> int:
    """Write ``collectives.parquet`` beside the kernels table of an extract folder; the rows written."""
    table = collectives_table(match_collectives(read_collectives(stage / "kernels.parquet")))
    write_table(stage / "collectives.parquet", table)
    return int(table.num_rows)
