"""Kernel families and CUDA API kinds, by name pattern.

A kernel's family is the first category whose regular expression matches its
name (case-insensitive), so the order matters: attention kernels built on
CUTLASS must be tested before GEMM, fused norms before generic fused kernels.
Users may replace the patterns from the workflow config.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from llmprof.common.errors import ConfigError

#: Every category, in report order; "other" catches what matches nothing.
CATEGORY_ORDER = (
    "gemm",
    "attention",
    "normalization",
    "activation",
    "elementwise/fused",
    "communication",
    "memory",
    "other",
)

#: Default patterns, tested in this order.
DEFAULT_PATTERNS: dict[str, str] = {
    "communication": r"nccl|all_?reduce|all_?gather|reduce_?scatter|all_?to_?all|cross_device_reduce|custom_ar"
    r"|broadcast",
    "attention": r"flash|fmha|attn|attention|mha_|paged_?attention|reshape_and_cache|rotary|rope_|softmax|xformers",
    "gemm": r"gemm|gemv|nvjet|xmma|wgmma|hmma|matmul|cublas|cutlass|splitk|scudnn|cudnn|conv|winograd|fft",
    "normalization": r"norm",
    "activation": r"silu|gelu|relu|act_and_mul|swiglu|sigmoid|tanh|swish|mish|elu_",
    "memory": r"copy|memcpy|memset|fill|gather|scatter|index|cat_|concat|transpose|permute|pad|arange|zero",
    "elementwise/fused": r"elementwise|triton_|fused|reduce|vectorized|unrolled|pointwise"
    r"|add_|_add|mul_|_mul|multiply|subtract|sum_|mean",
}

#: CUDA API kinds, tested in this order against the API name.
API_KIND_PATTERNS: dict[str, str] = {
    "sync": r"synchronize|streamwaitevent|eventquery|streamquery",
    "graph": r"graphlaunch|graphinstantiate|graphupload",
    "launch": r"launch",
    "memcpy": r"memcpy",
    "memset": r"memset",
    "alloc": r"malloc|free|memalloc|mempool|hostalloc|hostregister|hostunregister",
    "event": r"event",
    "module": r"module|library|getfunction|kernelget|funcget|tensormap",
}

#: OS runtime calls that wait (block the thread) rather than work.
WAITING_OSRT = re.compile(
    r"wait|poll|select|sleep|sem_|futex|pthread_join|pthread_cond|pthread_mutex_lock|accept|recv|read$",
    re.IGNORECASE,
)

#: GEMM kernel names that run on tensor cores (Hopper nvjet, xmma/wgmma/hmma, tensorop, MMA shapes).
TENSOR_CORE = re.compile(r"nvjet|xmma|wgmma|hmma|tensorop|_s16816|_s1688|sm90_|sm80_|sm100_|gmma", re.IGNORECASE)


@dataclass(frozen=True)
class Classifier:
    """Maps names to the first matching category, caching each distinct name."""

    patterns: tuple[tuple[str, re.Pattern[str]], ...]
    fallback: str = "other"

    @classmethod
    def from_patterns(cls, patterns: Mapping[str, str], fallback: str = "other") -> Classifier:
        compiled = []
        for category, pattern in patterns.items():
            try:
                compiled.append((category, re.compile(pattern, re.IGNORECASE)))
            except re.error as exc:
                raise ConfigError(f"category {category!r}: invalid regular expression {pattern!r} ({exc})") from exc
        return cls(tuple(compiled), fallback)

    def __call__(self, name: str | None) -> str:
        return _classify(self, name if isinstance(name, str) else "")  # a name StringIds lacks matches nothing

    def map(self, names: Iterable[str | None], details: Iterable[str | None] | None = None) -> list[str]:
        """Category of each name; where a name matches nothing, its detail (e.g. the
        demangled name with template arguments) is tried next. Distinct pairs are cached."""
        cache: dict[tuple[str | None, str | None], str] = {}
        out = []
        pairs = zip(names, details) if details is not None else ((n, None) for n in names)
        for pair in pairs:
            if pair not in cache:
                category = self(pair[0])
                if category == self.fallback and pair[1]:
                    category = self(pair[1])
                cache[pair] = category
            out.append(cache[pair])
        return out


def _classify(classifier: Classifier, name: str) -> str:
    for category, pattern in classifier.patterns:
        if pattern.search(name):
            return category
    return classifier.fallback


def kernel_classifier(patterns: Mapping[str, str] | None = None) -> Classifier:
    """The kernel-family classifier; ``patterns`` (category → regex) replaces the defaults."""
    chosen = dict(DEFAULT_PATTERNS if patterns is None else patterns)
    unknown = set(chosen) - set(CATEGORY_ORDER)
    if unknown:
        raise ConfigError(f"unknown kernel categories {sorted(unknown)}; choose from {', '.join(CATEGORY_ORDER)}")
    return Classifier.from_patterns(chosen)


API_KIND = Classifier.from_patterns(API_KIND_PATTERNS)


#: Short names too generic to tell kernels apart (CUTLASS and CuTe entry points).
GENERIC_SHORT_NAMES = {"device_kernel", "kernel", "Kernel", "kernel_entry"}
_TEMPLATE = re.compile(r"(\w+)<")
_WRAPPERS = {"device_kernel", "enable_sm90_or_later", "enable_sm80_to_sm89", "enable_sm100_or_later", "tuple", "C"}


def kernel_label(name: str | None, short_name: str | None) -> str:
    """A readable kernel label: the short name, qualified by its first meaningful template
    argument when the short name is generic (``device_kernel<FlashAttnFwdSm90>``)."""
    name = name if isinstance(name, str) else None  # a name StringIds lacks is missing, whatever the frame made of it
    short = (short_name if isinstance(short_name, str) else None) or name or "?"
    if short in GENERIC_SHORT_NAMES and name:
        inner = next((t for t in _TEMPLATE.findall(name) if t not in _WRAPPERS), None)
        if inner:
            return f"{short}<{inner}>"
    return short


#: NCCL device kernels (``ncclDevKernel_AllReduce_Sum_f32_RING_LL``, ``ncclKernel_SendRecv``): the operation follows.
NCCL_KERNEL = re.compile(r"^nccl(?:Dev)?Kernel_([A-Za-z0-9]+)")
#: vLLM's custom all-reduce (``cross_device_reduce_1stage``/``_2stage``): ranks pick the same variant for a tensor.
CUSTOM_ALL_REDUCE = re.compile(r"cross_device_reduce")
COMMUNICATION = "communication"


def collective_kind(short_name: str | None, name: str | None, category: str | None) -> str | None:
    """The collective a kernel runs (``nccl:AllReduce``, ``vllm:cross_device_reduce``), or None for other kernels.

    NCCL and vLLM's custom all-reduce are known by name whatever the categories say; any other kernel
    the categories put in "communication" is a collective of its own kind, named by its label. A kind
    names what runs in the same order on every rank, so instances can be matched across ranks.
    """
    short = short_name if isinstance(short_name, str) else (name if isinstance(name, str) else "")
    nccl = NCCL_KERNEL.match(short)
    if nccl:
        return f"nccl:{nccl.group(1)}"
    if CUSTOM_ALL_REDUCE.search(short):
        return "vllm:cross_device_reduce"
    if category == COMMUNICATION:
        return kernel_label(name, short_name)
    return None
