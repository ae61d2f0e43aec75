"""How much memory a training run will take, estimated before it starts, and the refusal of one that would not fit.

One user's settings must not take the server down (issue 22): ``--image-size 4096`` on 120 tiny images grew past
4 GB, ``--ranks 6`` took 5 GB. So ``core.train.plan.check_run`` runs when a run is submitted or resumed, in
``core.train.runner`` (the page, the command line, a search trial, a sweep point and a resume all pass there; the
learning-rate finder calls it too), from facts that cost no decoding: the scan's cached manifest and the config's
resolved choices. The Train page shows the same sentence among the plan's warnings before the button is pressed.

What the estimate adds up (bytes), per the way a run uses memory today:

* **processes**: a single-process run trains in a thread of the process that asks (its torch is already
  loaded); a ``torch.distributed`` run starts ``torchrun`` plus one process per rank, each loading torch.
* **images**: none of the decoded ``N x 3 x S x S`` uint8 images is held by the process (issue 28). They are
  decoded a chunk at a time straight into the cache file (``core.train.tensor_cache``; one chunk of at most
  :func:`decode_chunk_bytes` of the run's working memory held: **decoding**, which ends before the statistics and the training begin), and read
  from it a batch at a time with ``pread`` (``core.train.cache_rows``), in place whatever the order the run asks
  for. The file lives in the kernel's page cache (``cache_file``, on disk; not counted): when it is larger than
  the machine's memory, every epoch reads it from the disk (:func:`disk_bound`). Before issue 28 the whole
  tensor was held, twice while decoding: 11 GB for 20,000 images at 160 px.
* **statistics**: the training images' mean/std are summed in float64 chunks
  (``core.train.tensors.channel_stats``): each rank holds about 30 bytes per value of one chunk at once.
* **training**, per rank: weights, gradients, optimizer state (and DDP's gradient buckets), the activations of
  one batch share (``batch_size / ranks`` images; counted on the meta device, no memory used), and the batch's
  float copies (normalised, augmented). The evaluation batches (twice the size, no gradients) are smaller.

Measured against real peak RSS (``python -m core train DATA --epochs 1 ...`` on coloured squares, torch 2.14.1,
the 2-core VM): the whole process tree's VmRSS summed every 50 ms, and ``/usr/bin/time -v``'s maximum resident
set for single processes (the larger of the two), minus 0.92 GB, the peak of a process that has only imported
what ``train`` imports. The estimate is 1.1-1.6x what was measured, above it in every case (4x for the smallest,
where the fixed 0.2 GB per training process dominates). The estimates are those of today's code, which holds no
decoded image (issue 28); the peaks were measured when the process still held them, so they over-state today's:

    ===========================================  =======  ========  =========
    settings                                     images   estimate  measured
    ===========================================  =======  ========  =========
    LeNet, 32 px, batch 64                       120      0.28 GB   0.07 GB
    ResNet-18, 224 px, batch 64                  96       2.97 GB   1.87 GB
    MobileNetV2, 224 px, batch 32                96       3.47 GB   3.07 GB
    ResNet-50, 224 px, batch 16, Adam            96       3.21 GB   2.42 GB
    ResNet-18, 512 px, batch 8                   96       2.06 GB   1.61 GB
    LeNet, 256 px, batch 16, decoded afresh      900      1.23 GB   0.90 GB
    LeNet, 32 px, batch 64, 2 ranks              120      3.11 GB   2.19 GB
    ResNet-18, 112 px, batch 32, 2 ranks         96       3.73 GB   2.87 GB
    ===========================================  =======  ========  =========

A GPU run's weights and activations live on the GPU: the estimate still counts them in the machine's memory
(an over-estimate there), and does not check the GPU's own memory.

"Free" is ``MemAvailable`` of ``/proc/meminfo`` (what the kernel can hand out without swapping, page cache
included) minus a margin for everything else on the machine (:data:`MARGIN_BYTES` or :data:`MARGIN_SHARE` of the
total, the larger). A run is checked when it is submitted or resumed, not when it starts: runs queued behind
others are not counted against each other.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from core.common.cpu import usable_cores
from core.train.config import ConfigError, OptionError, TrainConfig

PROCESS_BYTES = 900 * 1024**2  # one more process that loads torch, torchvision and core (800 MB RSS measured)
AGENT_BYTES = 700 * 1024**2  # torchrun's agent process
RUN_BYTES = 200 * 1024**2  # a training process's own, whatever the settings (LeNet, 32 px: 70-170 MB measured)
MARGIN_BYTES = 512 * 1024**2  # kept free for the dashboard, the other runs' growth and the system
MARGIN_SHARE = 0.05  # ... or this share of the machine's memory, the larger
ACTIVATION_FACTOR = 1.25  # bytes held per byte of the layers' outputs (saved tensors, gradients; 0.85-1.2 measured)
INPUT_COPIES = 6  # float copies of a batch alive at once: converted, scaled, padded, shifted, flipped, normalised
STATS_BYTES_PER_VALUE = 32  # channel_stats, per value of a chunk: float64 copies and reductions (30 measured)
OPTIMIZER_STATES = {"sgd": 1, "adam": 2, "adamw": 2, "adadelta": 2, "rmsprop": 2}  # tensors per weight


BUDGET_SHARE = 8  # the automatic working memory: this fraction of what is free (1/8) ...
BUDGET_MIN, BUDGET_MAX = 64 * 1024**2, 512 * 1024**2  # ... within these (512 MB: the chunks of before the budget)
BUDGET_UNKNOWN = 256 * 1024**2  # where the free memory cannot be read


class RunTooBigError(ConfigError):
    """A run that would not fit in this machine's free memory; the message gives the estimate and what is free."""


@dataclass(frozen=True)
class MemoryEstimate:
    """What a run will take, by part (bytes). The parts after ``cache_file`` come one after the other, so the peak
    is the largest of them on top of the processes."""

    processes: int  # processes started for the run, and each training process's own
    cache_file: int  # the decoded images' file on disk (read a batch at a time: in the page cache, not counted)
    decoding: int  # the chunk buffer while a dataset is first decoded at this size
    statistics: int  # mean/std chunks, every rank at once
    training: int  # weights, optimizer, activations and batches, every rank at once
    working: int = 0  # the working memory decoding and statistics were sized by (:func:`working_bytes`)

    @property
    def total(self) -> int:
        return self.processes + max(self.decoding, self.statistics, self.training)


def working_bytes(config: TrainConfig, free: int | None = None) -> int:
    """The run's working memory: what it may hold of images at once while decoding them and summing their
    statistics. ``memory_budget`` MB when set, else an eighth of what is free (``free``, or read now), kept within
    ``BUDGET_MIN`` and ``BUDGET_MAX``: a small machine decodes in smaller chunks, a large one gains nothing above."""
    if config.memory_budget:
        return config.memory_budget * 1024**2
    free = free_bytes() if free is None else free
    return BUDGET_UNKNOWN if free is None else min(BUDGET_MAX, max(BUDGET_MIN, free // BUDGET_SHARE))


def decode_chunk_bytes(budget: int) -> int:
    """Decoded pixels held at once while decoding (``core.train.tensor_cache``): an eighth of the budget (64 MB at
    the automatic maximum: 870 images at 160 px)."""
    return max(1024**2, budget // 8)


def stats_chunk_bytes(budget: int) -> int:
    """Float64 bytes ``channel_stats`` sums at once: a quarter of the budget (its peak is about 3x that)."""
    return max(1024**2, budget // 4)


def estimate_memory(config: TrainConfig, n_images: int, n_train: int, n_classes: int) -> MemoryEstimate:
    """The memory a run of ``config`` (its ``auto`` choices resolved: arch, image size) takes on ``n_images``
    images, ``n_train`` of them for training, in ``n_classes`` classes."""
    side, ranks = config.image_size, config.ranks
    pixels = 3 * side * side
    per_rank = max(2, config.batch_size // ranks)  # core.train.fit: each rank takes its share of the batch
    processes = ranks * RUN_BYTES + (0 if ranks == 1 else AGENT_BYTES + ranks * PROCESS_BYTES)
    budget = working_bytes(config)
    stats = min(n_train, _stats_chunk(side, stats_chunk_bytes(budget))) * pixels * STATS_BYTES_PER_VALUE
    training = _training(config, per_rank, max(2, n_classes))
    decoding = min(n_images, max(1, decode_chunk_bytes(budget) // pixels)) * pixels  # a first decode's chunk buffer
    return MemoryEstimate(processes, n_images * pixels, decoding, ranks * stats, ranks * training, budget)


def disk_bound(estimate: MemoryEstimate, total: int | None = None) -> bool:
    """Whether the decoded images are larger than this machine's memory (``MemTotal``; ``total`` to say it), so
    the page cache cannot keep them and every epoch reads them from the disk."""
    total = total_bytes() if total is None else total
    return total is not None and estimate.cache_file > total


def _training(config: TrainConfig, batch: int, n_classes: int) -> int:
    params, outputs, largest = network_facts(config.arch, config.image_size, n_classes)
    states = OPTIMIZER_STATES.get(config.optimizer, 2) + (1 if config.ranks > 1 else 0)  # DDP's buckets
    weights = 4 * params * (2 + states)  # weights, gradients, optimizer state
    activations = int(4 * outputs * batch * ACTIVATION_FACTOR)
    inputs = 4 * 3 * config.image_size**2 * batch * INPUT_COPIES
    evaluation = 4 * largest * 2 * batch * 3  # twice the batch, input + output + one temporary of the widest layer
    return weights + max(activations + inputs, evaluation)


@functools.lru_cache(maxsize=64)
def network_facts(arch: str, image_size: int, n_classes: int) -> tuple[int, int, int]:
    """(parameters, output values of every layer for one image, output values of the widest layer) of ``arch``
    at ``image_size`` px: counted on the meta device (no memory, no compute), so even ResNet-152 at 1024 px is
    instant."""
    import torch

    from core.train.archs import arch_label, bare_model

    counts: list[int] = []
    with torch.device("meta"):
        model = bare_model(arch, n_classes, 3).eval()  # the same shapes; training mode refuses a 1x1 batch norm
        leaves = [m for m in model.modules() if not list(m.children())]
        hooks = [m.register_forward_hook(lambda _m, _i, out: counts.append(out.numel())) for m in leaves]
        try:
            with torch.no_grad():
                model(torch.empty(1, 3, image_size, image_size))
        except RuntimeError:  # a pooling layer left with nothing: training would fail the same way, later
            raise OptionError(f"too small for {arch_label(arch)}, whose layers would shrink it to nothing",
                              ("image_size", image_size)) from None  # fmt: skip
    for hook in hooks:
        hook.remove()
    return sum(p.numel() for p in model.parameters()), sum(counts), max(counts, default=0)


def _stats_chunk(side: int, chunk_bytes: int) -> int:
    from core.train.tensors import stats_chunk

    return stats_chunk(side, chunk_bytes)


# --- what is free, and the refusal -----------------------------------------------------------------------------


def _meminfo() -> dict[str, int] | None:
    try:
        info = dict(line.split(":", 1) for line in open("/proc/meminfo").read().splitlines() if ":" in line)
        return {k: int(info[k].split()[0]) * 1024 for k in ("MemAvailable", "MemTotal")}
    except (OSError, KeyError, ValueError):  # not Linux
        return None


def total_bytes() -> int | None:
    """The machine's memory (``MemTotal``); None where ``/proc/meminfo`` is missing."""
    info = _meminfo()
    return info["MemTotal"] if info else None


def free_bytes() -> int | None:
    """Memory a new run may take: ``MemAvailable`` minus the margin; None where ``/proc/meminfo`` is missing."""
    info = _meminfo()
    if info is None:  # not Linux: nothing to compare with, nothing refused
        return None
    return max(0, info["MemAvailable"] - max(MARGIN_BYTES, int(MARGIN_SHARE * info["MemTotal"])))


def memory_problem(estimate: MemoryEstimate, free: int | None = None) -> str | None:
    """The sentence refusing a run of ``estimate`` (None when it fits, or when the free memory is unknown)."""
    free = free_bytes() if free is None else free
    if free is None or estimate.total <= free:
        return None
    return (f"this run would need about {size_words(estimate.total)} of memory; {size_words(free)} is free on this "
            "machine. Choose a smaller input size or fewer images per step, fewer processes, or a smaller network.")  # fmt: skip


def cores_problem(config: TrainConfig, nodes: int = 1, *, name: str = "ranks") -> str | None:
    """More processes than this machine's cores (one machine only: several machines share the work). ``name``:
    what the option is called where the sentence is read (``ranks`` on the command line)."""
    cores = usable_cores()
    if nodes > 1 or config.ranks <= cores:
        return None
    return (f"{name} {config.ranks}: this machine has {cores} usable core{'s' if cores != 1 else ''}; more training "
            f"processes than cores only slow a run down, and each takes about {size_words(PROCESS_BYTES)} of "
            f"memory. Choose at most {cores}.")  # fmt: skip


def size_words(n: float) -> str:
    """Bytes as people read them: 1.2 GB, 350 MB."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n / 1e6:,.0f} MB"
