"""Schemas of every Parquet table llmprof writes: names say the unit (ns, bytes).

Times are int64 nanoseconds on the export's own clock (nsys records them relative
to the session start); ``pid``/``tid`` are the operating-system ids decoded from
nsys's ``globalTid``. A table that had no rows in the capture is still written,
with zero rows and this schema.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 1

_TIME = [
    pa.field("start_ns", pa.int64(), nullable=False),
    pa.field("end_ns", pa.int64(), nullable=False),
    pa.field("duration_ns", pa.int64(), nullable=False),
]
_GPU = [
    pa.field("device_id", pa.int32()),
    pa.field("context_id", pa.int32()),
    pa.field("stream_id", pa.int64()),
    pa.field("correlation_id", pa.int64()),
    pa.field("pid", pa.int32()),
]
_HOST = [pa.field("pid", pa.int32()), pa.field("tid", pa.int32())]

KERNELS = pa.schema(
    [
        *_GPU,
        *_TIME,
        pa.field("name", pa.string()),  # demangled where the export has it
        pa.field("short_name", pa.string()),
        pa.field("category", pa.string()),
        pa.field("grid_x", pa.int32()),
        pa.field("grid_y", pa.int32()),
        pa.field("grid_z", pa.int32()),
        pa.field("block_x", pa.int32()),
        pa.field("block_y", pa.int32()),
        pa.field("block_z", pa.int32()),
        pa.field("registers_per_thread", pa.int32()),
        pa.field("static_shared_bytes", pa.int64()),
        pa.field("dynamic_shared_bytes", pa.int64()),
        pa.field("graph_node_id", pa.int64()),  # set when launched from a CUDA graph
    ]
)

CUDA_API = pa.schema(
    [
        *_HOST,
        *_TIME,
        pa.field("correlation_id", pa.int64()),
        pa.field("name", pa.string()),  # as nsys prints it: version suffix such as _v3020 dropped
        pa.field("kind", pa.string()),  # launch, graph, sync, memcpy, memset, alloc, event, module, other
        pa.field("return_value", pa.int64()),
    ]
)

MEMCPY = pa.schema(
    [
        *_GPU,
        *_TIME,
        pa.field("size_bytes", pa.int64()),
        pa.field("copy_kind", pa.string()),  # Host-to-Device, Device-to-Host, ...
        pa.field("direction", pa.string()),  # H2D, D2H, D2D, H2H, P2P, other
        pa.field("src_kind", pa.string()),  # Pageable, Pinned, Device, ...
        pa.field("dst_kind", pa.string()),
    ]
)

MEMSET = pa.schema(
    [
        *_GPU,
        *_TIME,
        pa.field("size_bytes", pa.int64()),
        pa.field("value", pa.int64()),
        pa.field("mem_kind", pa.string()),
    ]
)

SYNC = pa.schema(
    [
        *_GPU,
        *_TIME,
        pa.field("sync_type", pa.string()),  # Event sync, Stream sync, Context sync, ...
    ]
)

NVTX = pa.schema(
    [
        *_HOST,
        *_TIME,
        pa.field("domain", pa.string()),  # empty for the default domain
        pa.field("name", pa.string()),  # "domain:text", as nsys names ranges
        pa.field("style", pa.string()),  # PushPop or StartEnd
    ]
)

OSRT = pa.schema([*_HOST, *_TIME, pa.field("name", pa.string())])

GPUS = pa.schema(
    [
        pa.field("device_id", pa.int32()),
        pa.field("name", pa.string()),
        pa.field("bus_location", pa.string()),
        pa.field("total_memory_bytes", pa.int64()),
        pa.field("sm_count", pa.int32()),
        pa.field("compute_capability", pa.string()),
        pa.field("memory_bandwidth_bytes_per_s", pa.int64()),
        pa.field("clock_rate_hz", pa.int64()),
    ]
)

#: The profiler's own work as nsys records it: a CUPTI buffer flush, a thread-local allocation.
PROFILER_WORK = pa.schema(
    [
        *_HOST,
        *_TIME,
        pa.field("name", pa.string()),  # CUDA profiling data flush on cudaProfilerStop, TLS allocation, ...
        pa.field("overhead_type", pa.string()),  # Buffer flush (Profiler), ...; null where the export has no kind
    ]
)

PROCESSES = pa.schema([pa.field("pid", pa.int32()), pa.field("name", pa.string())])

NVTX_GPU = pa.schema(
    [
        pa.field("name", pa.string()),
        pa.field("style", pa.string()),
        *_HOST,
        pa.field("start_ns", pa.int64()),
        pa.field("end_ns", pa.int64()),
        pa.field("proj_start_ns", pa.int64()),
        pa.field("proj_end_ns", pa.int64()),
        pa.field("cuda_calls", pa.int64()),  # launching CUDA calls inside the range
        pa.field("gpu_ops", pa.int64()),  # kernels, copies and memsets they launched
        pa.field("gpu_time_ns", pa.int64()),  # summed duration of those operations
        pa.field("level", pa.int32()),
        pa.field("children", pa.int32()),
    ]
)

#: One row per collective kernel (NCCL, vLLM custom all-reduce, other "communication" kernels), its instance
#: matched across ranks (rank: device and process): see ``analysis.collectives``.
COLLECTIVES = pa.schema(
    [
        pa.field("kind", pa.string()),  # nccl:AllReduce, vllm:cross_device_reduce, or the kernel's label
        pa.field("instance", pa.int64()),  # the k-th instance of the kind on every rank; null: unmatched
        pa.field("device_id", pa.int32()),
        pa.field("pid", pa.int32()),
        pa.field("ordinal", pa.int64()),  # position among this rank's kernels of the kind
        *_TIME,
        pa.field("transfer_ns", pa.int64()),  # the instance's fastest rank's duration; null: unmatched
        pa.field("wait_ns", pa.int64()),  # duration_ns - transfer_ns: waiting for the other ranks
        pa.field("last_to_arrive", pa.bool_(), nullable=False),  # started the instance last
        pa.field("setup", pa.bool_(), nullable=False),  # a one-off far above the kind's median, not steady state
        pa.field("name", pa.string()),  # kernel short name
    ]
)

#: Raw event tables extracted from the export, in the order they are written.
EVENT_TABLES: dict[str, pa.Schema] = {
    "kernels": KERNELS,
    "cuda_api": CUDA_API,
    "memcpy": MEMCPY,
    "memset": MEMSET,
    "sync": SYNC,
    "nvtx": NVTX,
    "osrt": OSRT,
    "gpus": GPUS,
    "processes": PROCESSES,
    "profiler_overhead": PROFILER_WORK,
}
