"""The paper's training recipe (§3) as code: SGD, filter RMS renormalisation, annealing on plateau.

SGD with learning rate 1e-2 and momentum 0.9, batch 128, dropout 0.5 on fc6/fc7 (in the model), weights from
N(0, 1e-2) with zero biases (the model's initialisation), and after every update each conv filter whose RMS
exceeds a fixed radius of 0.1 is rescaled to that radius. The learning rate is divided by 10 when the
validation error stops improving. Checkpoints every epoch, resumes, shows progress, and calls
:class:`EpochCallback` objects (e.g. the feature-evolution recorder) at the end of each epoch.

Example:
    >>> import torch
    >>> from zf_attr.models import zfnet
    >>> from zf_attr.models.training import renormalize_filters
    >>> model = zfnet(variant="shapes", num_classes=6)
    >>> with torch.no_grad():
    ...     _ = model.conv1.weight.mul_(100)
    >>> renormalize_filters(model, radius=0.1) > 0
    True
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "EpochCallback",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "imagefolder_datasets",
    "paper_transforms",
    "renormalize_filters",
    "train",
]


@dataclass
class TrainConfig:
    """Hyper-parameters of the recipe (defaults: the paper's).

    Attributes:
        epochs: passes over the training data (the paper: 70 on ImageNet).
        batch_size: examples per SGD step.
        lr: initial learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty (the paper states none).
        rms_radius: filter RMS renormalisation radius (``None`` disables it).
        plateau_patience: epochs without a lower validation error before the learning rate is annealed.
        anneal_factor: factor applied to the learning rate on a plateau.
        min_lr: the learning rate is not annealed below this.
        workers: DataLoader worker processes.
        seed: seed of the data order.

    Example:
        >>> TrainConfig(epochs=40, plateau_patience=5).lr     # everything else as in the paper
        0.01
    """

    epochs: int = 70
    batch_size: int = 128
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 0.0
    rms_radius: float | None = 0.1
    plateau_patience: int = 2
    anneal_factor: float = 0.1
    min_lr: float = 1e-5
    workers: int = 0
    seed: int = 0


@dataclass
class TrainResult:
    """What a training run did: per-epoch history, the best validation error and where checkpoints are.

    Example:
        >>> TrainResult().best_epoch      # before any epoch
        -1
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_val_error: float = math.inf
    best_epoch: int = -1
    checkpoint_dir: Path | None = None


class EpochCallback(Protocol):
    """Called after every epoch with the epoch number (1-based) and the model (e.g. feature evolution)."""

    def __call__(self, epoch: int, model: nn.Module) -> None:
        """React to the end of ``epoch``."""


def renormalize_filters(model: nn.Module, radius: float = 0.1) -> int:
    """Rescale every conv filter whose RMS exceeds ``radius`` to exactly that RMS (paper §3).

    Args:
        model: any model; every ``nn.Conv2d`` filter (one output channel) is checked.
        radius: the fixed RMS radius (0.1 in the paper).

    Returns:
        How many filters were rescaled.
    """
    if radius <= 0:
        raise ValueError(f"radius must be positive, got {radius}")
    rescaled = 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                weight = module.weight
                rms = weight.pow(2).mean(dim=tuple(range(1, weight.dim())), keepdim=True).sqrt()
                too_big = rms > radius
                rescaled += int(too_big.sum())
                weight.mul_(torch.where(too_big, radius / rms, torch.ones_like(rms)))
    return rescaled


def paper_transforms(train: bool, crop: int = 224, mean: Sequence[float] | None = None) -> Any:
    """The paper's preprocessing for ImageFolder data: short side 256, centre 256×256, 224 crops.

    Training takes a random 224 crop of the centre 256×256 (one of the paper's sub-crops, sampled) and a
    random horizontal flip; evaluation takes the centre crop. Mean subtraction uses per-channel ImageNet
    statistics (the paper subtracts a per-pixel mean image). For another ``crop`` every size scales by
    ``crop / 224``.
    """
    from torchvision import transforms

    mean = list(mean) if mean is not None else [0.485, 0.456, 0.406]
    side = round(crop * 256 / 224)
    steps: list[Any] = [transforms.Resize(side), transforms.CenterCrop(side)]
    if train:
        steps += [transforms.RandomCrop(crop), transforms.RandomHorizontalFlip()]
    else:
        steps += [transforms.CenterCrop(crop)]
    steps += [transforms.ToTensor(), transforms.Normalize(mean, [0.229, 0.224, 0.225])]
    return transforms.Compose(steps)


def imagefolder_datasets(root: str | Path, crop: int = 224) -> tuple[Dataset, Dataset]:
    """``root/train`` and ``root/val`` as ImageFolder data sets with :func:`paper_transforms`."""
    from torchvision.datasets import ImageFolder

    root = Path(root)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise FileNotFoundError(f"expected an ImageFolder tree with {root / split}/<class>/<image> files")
    return (
        ImageFolder(str(root / "train"), paper_transforms(True, crop)),
        ImageFolder(str(root / "val"), paper_transforms(False, crop)),
    )


def evaluate(model: nn.Module, data: Iterable[tuple[Tensor, Tensor]], device: str | torch.device = "cpu") -> dict:
    """Mean cross-entropy and top-1 error of ``model`` over ``data`` (eval mode, restored afterwards)."""
    was_training = model.training
    model.eval()
    total, loss_sum, wrong = 0, 0.0, 0
    try:
        with torch.no_grad():
            for images, labels in data:
                images, labels = images.to(device), labels.to(device)
                logits = model(images)
                loss_sum += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
                wrong += int((logits.argmax(dim=1) != labels).sum())
                total += len(labels)
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("evaluation data is empty")
    return {"loss": loss_sum / total, "error": wrong / total}


def train(
    model: nn.Module,
    train_data: Dataset,
    val_data: Dataset,
    config: TrainConfig | None = None,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[EpochCallback] = (),
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` with the paper's recipe, checkpointing ``last.pt`` and ``best.pt`` every epoch.

    Args:
        model: e.g. :func:`zf_attr.models.zfnet`; trained in place.
        train_data: map-style data set of ``(image, label)`` to train on.
        val_data: map-style data set of ``(image, label)`` for the validation error (annealing, best.pt).
        config: hyper-parameters (default: the paper's).
        checkpoint_dir: folder for ``last.pt`` (model, optimiser, scheduler, epoch, history), ``best.pt``
            (state dict of the best validation error) and ``history.json``; ``None`` keeps nothing.
        resume: continue from ``checkpoint_dir/last.pt`` if it exists.
        callbacks: called as ``callback(epoch, model)`` after every epoch.
        device: where to train.
        progress: show a progress bar per epoch (tqdm).

    Returns:
        The :class:`TrainResult` with the per-epoch history.
    """
    config = config or TrainConfig()
    model.to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.anneal_factor, patience=config.plateau_patience, min_lr=config.min_lr
    )
    result = TrainResult(checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir is not None else None)
    start_epoch = 1
    if result.checkpoint_dir is not None:
        result.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        last = result.checkpoint_dir / "last.pt"
        if resume and last.is_file():
            state = torch.load(last, map_location=device, weights_only=False)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            result.history = state["history"]
            result.best_val_error, result.best_epoch = state["best_val_error"], state["best_epoch"]
            start_epoch = state["epoch"] + 1
    generator = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(
        train_data, batch_size=config.batch_size, shuffle=True, generator=generator, num_workers=config.workers
    )
    val_loader = DataLoader(val_data, batch_size=config.batch_size, num_workers=config.workers)
    for epoch in range(start_epoch, config.epochs + 1):
        generator.manual_seed(config.seed + epoch)  # the data order of an epoch survives a resume
        began = time.perf_counter()
        train_loss = _train_one_epoch(model, train_loader, optimizer, config, device, progress, epoch)
        scores = evaluate(model, val_loader, device)
        scheduler.step(scores["error"])
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": scores["loss"],
            "val_error": scores["error"],
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - began,
        }
        result.history.append(record)
        if progress:
            print(
                f"epoch {epoch}/{config.epochs}: train loss {train_loss:.4f}, val loss {scores['loss']:.4f}, "
                f"val error {scores['error']:.4f}, lr {record['lr']:.1e}",
                flush=True,
            )
        if scores["error"] < result.best_val_error:
            result.best_val_error, result.best_epoch = scores["error"], epoch
            if result.checkpoint_dir is not None:
                torch.save(model.state_dict(), result.checkpoint_dir / "best.pt")
        if result.checkpoint_dir is not None:
            _save_checkpoint(result, model, optimizer, scheduler, epoch, config)
        for callback in callbacks:
            callback(epoch, model)
    return result


def _train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    device: str | torch.device,
    progress: bool,
    epoch: int,
) -> float:
    model.train()
    total, loss_sum = 0, 0.0
    batches: Iterable = loader
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False)
    for images, labels in batches:
        images, labels = images.to(device), labels.to(device)
        loss = nn.functional.cross_entropy(model(images), labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training diverged at epoch {epoch} (loss {float(loss)}); lower the lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if config.rms_radius is not None:
            renormalize_filters(model, config.rms_radius)
        loss_sum += float(loss.detach()) * len(labels)
        total += len(labels)
    return loss_sum / max(total, 1)


def _save_checkpoint(
    result: TrainResult,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epoch: int,
    config: TrainConfig,
) -> None:
    assert result.checkpoint_dir is not None
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "history": result.history,
        "best_val_error": result.best_val_error,
        "best_epoch": result.best_epoch,
        "config": asdict(config),
    }
    temporary = result.checkpoint_dir / "last.pt.tmp"
    torch.save(state, temporary)
    temporary.replace(result.checkpoint_dir / "last.pt")  # a crash mid-save never corrupts last.pt
    (result.checkpoint_dir / "history.json").write_text(json.dumps(result.history, indent=2) + "\n")
