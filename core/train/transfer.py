"""Transfer: a child run starts from a parent run's best checkpoint (``TrainConfig.from_run``).

The CIFAR report moved a CIFAR-100 model's weights to CIFAR-10; here any finished (or stopped) training run can be
the parent of another run, on other data and other classes:

* the network is the parent's (``arch="auto"`` takes it; another network is refused: the weights fit only theirs);
* the parent's best weights are the start; its classification head is kept only when the child has the very same
  classes in the same order, else the child gets a new head for its own classes, fitted on the parent's features
  before the network trains (:func:`starting_weights`); the backbone is kept;
* freezing and the backbone learning-rate factor apply as they do for ImageNet weights, and ``lr=0`` gives a tenth
  of the usual rate (``core.train.runplan.resolve``: trained weights want smaller steps);
* the inputs are scaled by the child's own images' statistics (``normalize="auto"``), not ImageNet's: the parent
  learned on its dataset's statistics, and the child's data is what the network sees from now on;
* the child records its parent (``parent_id`` in the run store, unless a search already is its parent; the
  config's ``from_run`` names it either way).

:func:`child_config` checks and completes a config before the child is queued; :func:`starting_weights` gives the
weights file once the child's classes are known (the job calls it after the data is prepared).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from core.store.records import RunRecord
from core.train.config import OptionError, TrainConfig

if TYPE_CHECKING:  # torch only where weights are made
    import torch
    from torch import nn

    from core.common.workspace import Workspace
    from core.store.runs import RunStore
    from core.train.batches import Batches
    from core.train.prepare import PreparedData

PARENT_WEIGHTS = "parent-weights.pt"  # beside a child's checkpoints: the parent's weights with the child's head
PROBE_IMAGES = 1024  # the new head is fitted on at most this many training images (two forward passes each)
PROBE_STEPS = 100  # L-BFGS iterations for the new head
PROBE_L2 = 1e-2  # weight decay on the new head: moderate weights, as a trained head has (see fit_head)


def child_config(config: TrainConfig, parent: RunRecord, checkpoint: Path) -> TrainConfig:
    """``config`` with the parent's network, once the parent is known to be usable.

    Args:
        config: the child's config, ``from_run`` set to ``parent``'s id.
        parent: the parent run's record.
        checkpoint: the parent's ``best.pt``.

    Raises:
        OptionError: the parent is not a training run, has no best checkpoint yet, the config also names other
            starting weights, or asks for another network (the options concerned are named in its fields).
    """
    number = parent.run_id
    if parent.kind != "train":
        raise OptionError(f"run {number} is a {parent.kind} run; start from a training run", ("from_run", number))
    if not checkpoint.is_file() or not parent.arch:
        raise OptionError(f"run {number} has no best checkpoint yet (it has not finished an epoch); wait for it, or "
                          "start from another run", ("from_run", number))  # fmt: skip
    if config.weights != "none":
        raise OptionError("a run starts from one of them, not both: give no starting weights to start from the run",
                          ("weights", config.weights), ("from_run", number))  # fmt: skip
    if config.arch not in ("auto", parent.arch):
        raise OptionError(f"run {number} trained {parent.arch!r}, and its weights fit only that network; choose auto "
                          f"or {parent.arch}", ("arch", config.arch))  # fmt: skip
    return replace(config, arch=parent.arch)


def with_parent(config: TrainConfig, store: RunStore, ws: Workspace) -> TrainConfig:
    """``config`` completed with its parent's network when it starts from another run (:func:`child_config`), else
    as it is: what the Train page, the command line (a run and its dry run) and the learning-rate finder plan from.

    Raises:
        OptionError: see :func:`child_config`. RunStoreError: no such run.
    """
    if not config.from_run:
        return config
    from core.train.run_folder import checkpoint_path

    parent = store.get_run(config.from_run)
    return child_config(config, parent, checkpoint_path(ws, parent.run_id))


def starting_weights(checkpoint: Path, data: PreparedData, folder: Path) -> Path:
    """The weights file a child starts from: the parent's ``best.pt`` itself when the child has the same classes,
    else the parent's weights made ready for the child's classes, written into ``folder`` (the child's run folder).

    A head for other classes is replaced even when it has the right size (digits 0-4 to digits 5-9: five outputs
    each): its rows mean the parent's classes. Before the child trains, (1) every BatchNorm layer's statistics are
    re-estimated on the child's images (:func:`renormalise`) and (2) the new head is fitted on the parent's
    features of the child's training images (:func:`fit_head`); only then does the whole network train ("linear
    probing, then fine-tuning", Kumar et al., ICLR 2022). Measured on digits 0-4 -> 5-9, one epoch, default
    settings otherwise, three seeds: a random new head ended at 40-48% test accuracy where the same child from
    scratch reached 47-81% (its first large gradients wreck the parent's features); with (1) and (2) the child
    reached 93-96% (64 images per step) and 96-98% (16 per step), against 47-81% and 81-91% from scratch.
    """
    from core.train.checkpoints import load_checkpoint

    parent = load_checkpoint(checkpoint)
    if parent.classes == [str(c) for c in data.classes]:
        return checkpoint
    arch, n_parent = parent.arch, len(parent.classes)
    model = _parent_model(arch, n_parent, parent.weights)
    batches = _probe_batches(data)
    renormalise(model.to(batches.device), batches)
    head = _last_linear(model, arch)
    features, labels = _features(model, head, batches)
    model.cpu()
    weight, bias = fit_head(features, labels, len(data.classes), data.config.label_smoothing)
    prefix = head_prefix(arch)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}
    state |= {f"{_name_of(model, head)}.weight": weight, f"{_name_of(model, head)}.bias": bias}
    target = folder / PARENT_WEIGHTS
    _save_state(target, state)
    return target


def fit_head(
    features: torch.Tensor, labels: torch.Tensor, n_classes: int, smoothing: float
) -> tuple[torch.Tensor, ...]:
    """(weight, bias) of a linear head fitted to ``features`` -> ``labels``: cross-entropy with the run's label
    smoothing (which keeps the logits moderate), full-batch L-BFGS from zeros (no random draw, so the run's seeded
    streams are untouched)."""
    import torch
    import torch.nn.functional as F

    features = features.float()
    weight = torch.zeros(n_classes, features.shape[1], requires_grad=True)
    bias = torch.zeros(n_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=PROBE_STEPS, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = F.cross_entropy(features @ weight.T + bias, labels, label_smoothing=smoothing)
        value = value + PROBE_L2 * weight.square().sum()
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(loss)
    return weight.detach(), bias.detach()


def _parent_model(arch: str, n_classes: int, state: dict) -> nn.Module:
    from core.train.models import build_model

    model = build_model(arch, n_classes)
    model.load_state_dict(state)
    return model.eval()


def _last_linear(model: nn.Module, arch: str) -> nn.Module:
    from torch import nn

    from core.train.archs import arch_info, resolve_module

    head = resolve_module(model, arch_info(arch).head)
    return [m for m in head.modules() if isinstance(m, nn.Linear)][-1]


def _name_of(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def _probe_batches(data: PreparedData) -> Batches:
    """(At most ``PROBE_IMAGES`` of) the child's training images, unaugmented, scaled as the child run scales them."""
    import torch

    from core.train.batches import Batches
    from core.train.checkpoints import device_for

    train = torch.as_tensor(data.indices["train"], dtype=torch.long)
    if len(train) > PROBE_IMAGES:  # a fixed draw: the same child gets the same head
        train = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:PROBE_IMAGES]]
    mean, std = data.scaling()
    device = device_for(data.config.device)
    return Batches(data.tensors.images, data.labels, train, batch_size=256, mean=mean, std=std, device=device)


def renormalise(model: nn.Module, batches: Batches) -> None:
    """Re-estimate every BatchNorm layer's running statistics on the child's images (AdaBN, Li et al. 2016).

    The parent's statistics describe the parent's images; a child trains with its own batches' statistics, so a
    head fitted on features normalised the parent's way would meet other features as soon as training starts
    (measured: 99% in eval mode, a training loss of 1.4 and a wrecked network after a few steps).
    """
    import torch
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for layer in norms:
        layer.reset_running_stats()
        layer.momentum = None  # a plain average over the batches below
    model.train()
    with torch.no_grad():
        for x, _ in batches.epoch(0):
            model(x)
    for layer in norms:
        layer.momentum = 0.1  # torch's default, what the run trains with
    model.eval()


def _features(model: nn.Module, head: nn.Module, batches: Batches) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``head`` sees for the images of ``batches`` (the model in eval mode), with their labels."""
    import torch

    seen: list[torch.Tensor] = []
    hook = head.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].detach().flatten(1)))
    labels = []
    try:
        with torch.inference_mode():
            for x, y in batches.epoch(0):
                model(x)
                labels.append(y)
    finally:
        hook.remove()
    return torch.cat(seen).cpu().clone(), torch.cat(labels).cpu().clone()


def head_prefix(arch: str) -> str:
    """The state-dict key prefix of ``arch``'s classification head (``"fc."`` for a ResNet)."""
    import torch

    from core.train.archs import arch_info, bare_model, module_name, resolve_module

    with torch.device("meta"):  # no memory, no initialiser: only the names are needed
        net = bare_model(arch, 10, 3)
    return module_name(net, resolve_module(net, arch_info(arch).head)) + "."


def _save_state(path: Path, state: dict) -> None:
    import torch

    from core.common.atomic import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda fh: torch.save(state, fh))
