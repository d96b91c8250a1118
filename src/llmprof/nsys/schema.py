"""What llmprof knows of the Nsight Systems SQLite schema: table names, codes, enum labels, id layouts.

nsys creates a table only when the capture holds data of its kind, has added and
renamed columns across versions (2020.3 to today), and packs process and thread
ids into one ``globalTid``. This module names those facts once; the readers in
this subpackage are the only code that uses them.
"""

from __future__ import annotations

import numpy as np

KERNEL = "CUPTI_ACTIVITY_KIND_KERNEL"
RUNTIME = "CUPTI_ACTIVITY_KIND_RUNTIME"
MEMCPY = "CUPTI_ACTIVITY_KIND_MEMCPY"
MEMSET = "CUPTI_ACTIVITY_KIND_MEMSET"
SYNC = "CUPTI_ACTIVITY_KIND_SYNCHRONIZATION"
NVTX = "NVTX_EVENTS"
OSRT = "OSRT_API"
GPU_INFO = "TARGET_INFO_GPU"
#: The profiler's own work (buffer flushes, thread-local allocations), on the thread it delayed.
PROFILER_OVERHEAD = "PROFILER_OVERHEAD"
PROCESSES = "PROCESSES"
THREAD_NAMES = "ThreadNames"
STRINGS = "StringIds"
MEMCPY_KINDS = "ENUM_CUDA_MEMCPY_OPER"
MEM_KINDS = "ENUM_CUDA_MEM_KIND"
SYNC_TYPES = "ENUM_CUPTI_SYNC_TYPE"
OVERHEAD_TYPES = "ENUM_CUPTI_OVERHEAD_TYPE"  # labels of PROFILER_OVERHEAD.overheadType (nsys 2024 on)
#: The metadata table, newest name first (renamed in nsys 2023.3).
METADATA_TABLES = ("META_DATA_EXPORT", "EXPORT_META_DATA")

#: The event tables llmprof reads, by the name of the Parquet table each one becomes.
EVENT_SOURCES: dict[str, str] = {
    "kernels": KERNEL,
    "cuda_api": RUNTIME,
    "memcpy": MEMCPY,
    "memset": MEMSET,
    "sync": SYNC,
    "nvtx": NVTX,
    "osrt": OSRT,
    "gpus": GPU_INFO,
    "profiler_overhead": PROFILER_OVERHEAD,
}
#: Tables of GPU operations that a CUDA call launches (correlated by process and correlation id).
GPU_OPERATIONS = {"kernels": KERNEL, "memcpy": MEMCPY, "memset": MEMSET}

#: Labels of CUPTI memcpy kinds, used when the export has no ENUM_CUDA_MEMCPY_OPER.
MEMCPY_KIND_LABELS: dict[int, str] = {
    0: "Unknown",
    1: "Host-to-Device",
    2: "Device-to-Host",
    3: "Host-to-Array",
    4: "Array-to-Host",
    5: "Array-to-Array",
    6: "Array-to-Device",
    7: "Device-to-Array",
    8: "Device-to-Device",
    9: "Host-to-Host",
    10: "Peer-to-Peer",
    11: "Unified Host-to-Device",
    12: "Unified Device-to-Host",
    13: "Unified Device-to-Device",
}

#: Labels of CUPTI synchronization kinds, used when ENUM_CUPTI_SYNC_TYPE is absent.
SYNC_TYPE_LABELS: dict[int, str] = {
    0: "Unknown",
    1: "Event sync",
    2: "Stream wait sync",
    3: "Stream sync",
    4: "Context sync",
}

#: Labels of CUDA memory kinds, used when ENUM_CUDA_MEM_KIND is absent.
MEM_KIND_LABELS: dict[int, str] = {
    0: "Unknown",
    1: "Pageable",
    2: "Pinned",
    3: "Device",
    4: "Array",
    5: "Managed",
    6: "Device Static",
    7: "Managed Static",
}

#: NVTX_EVENTS.eventType codes (stable across nsys versions).
NVTX_PUSH_POP = 59
NVTX_START_END = 60
NVTX_DOMAIN_CREATE = 75
NVTXT_PUSH_POP = 70  # the same ranges recorded through the NVTX text (NVTXT) path
NVTXT_START_END = 71
NVTX_RANGE_TYPES = (NVTX_PUSH_POP, NVTX_START_END, NVTXT_PUSH_POP, NVTXT_START_END)

#: OSRT_API.eventClass of OS runtime calls proper (other classes are bookkeeping rows).
OSRT_EVENT_CLASS = 27

# A globalTid packs the host (bits 40-63), the process id (bits 24-39) and the thread id (bits 0-23);
# a globalPid is the same number with the thread bits zero.
_ID_BITS = 24
_ID_MASK = (1 << _ID_BITS) - 1
_PROCESS_BITS = np.int64(~_ID_MASK)


def pid_sql(column: str) -> str:
    """SQL decoding the operating-system process id of a globalTid or globalPid column."""
    return f"(({column} >> {_ID_BITS}) & {_ID_MASK})"


def tid_sql(column: str) -> str:
    """SQL decoding the operating-system thread id of a globalTid column."""
    return f"({column} & {_ID_MASK})"


def global_pid_sql(column: str) -> str:
    """SQL turning a globalTid into its process's globalPid (the thread bits cleared)."""
    return f"({column} & {~_ID_MASK})"


def pids(global_ids: np.ndarray) -> np.ndarray:
    """Operating-system process ids of globalTid or globalPid values."""
    return (global_ids >> _ID_BITS) & _ID_MASK


def tids(global_tids: np.ndarray) -> np.ndarray:
    """Operating-system thread ids of globalTid values."""
    return global_tids & _ID_MASK


def global_pids(global_tids: np.ndarray) -> np.ndarray:
    """The globalPid of each globalTid: what GPU operations carry to name their process."""
    return global_tids & _PROCESS_BITS


def api_name_sql(column: str) -> str:
    """SQL naming a CUDA API as nsys prints it: a 4-digit version suffix (``_v3020``) dropped."""
    return f"CASE substr({column}, -6, 2) WHEN '_v' THEN substr({column}, 1, length({column}) - 6) ELSE {column} END"
