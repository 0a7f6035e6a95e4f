"""Models named on the command line, their weights, class names and preprocessing.

Models: ``zfnet`` (the bundled ZFNet, trained on 6 generated shapes: a demo model, not an ImageNet classifier),
any torchvision classifier name, ``timm:NAME`` (a timm model, optional extra ``zf-attr[timm]``) or
``package.module:factory`` (a function returning the model).

Weights (``--weights``): a local file (``.pt``/``.pth``/``.safetensors``), or for torchvision models a name of
torchvision's weights API (``DEFAULT``, ``IMAGENET1K_V1``, ``ResNet50_Weights.IMAGENET1K_V2``), loaded from the
torch hub cache (``$TORCH_HOME/hub/checkpoints``) or downloaded by torchvision where the machine can; for timm
models ``pretrained`` (timm's own cache or download). Named weights bring their preprocessing and class names.
Class names (``--classes FILE``, one a line or a JSON list) override those of the weights.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError

import torch
from torch import nn

from zf_attr.cli._images import InputError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LoadedModel",
    "Preprocessing",
    "load_model",
    "pick_device",
    "read_classes",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEMO_NOTE = (
    "using the bundled ZFNet trained on 6 generated shapes (a demo model, not an ImageNet classifier); "
    "choose yours with --model and --weights"
)


@dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes a model input: resize the short side, centre-crop, normalise."""

    size: int
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"


@dataclass
class LoadedModel:
    """A model ready to explain (eval mode, on ``device``), with the preprocessing and class names it expects."""

    model: nn.Module
    preprocessing: Preprocessing
    categories: tuple[str, ...] | None
    note: str
    device: torch.device
    demo: bool = False

    @property
    def size(self) -> int:
        """Side of the (square) model input in pixels."""
        return self.preprocessing.size

    @property
    def mean(self) -> tuple[float, ...]:
        """Normalisation mean per channel."""
        return self.preprocessing.mean

    @property
    def std(self) -> tuple[float, ...]:
        """Normalisation standard deviation per channel."""
        return self.preprocessing.std

    def class_name(self, index: int) -> str:
        """The category name of class ``index`` when the model has names, else the index."""
        if self.categories is not None and 0 <= index < len(self.categories):
            return self.categories[index]
        return str(index)


def pick_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; any other name is checked by torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise InputError(f"--device {name!r} is not a torch device (try cpu, cuda, cuda:1 or auto)") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name!r}: CUDA is not available on this machine (use --device cpu)")
    return device


def read_classes(path: Path) -> tuple[str, ...]:
    r"""Class names from ``path``: a JSON list (or an object mapping ``"0"``, ``"1"``, ... to names), else one a line.

    Example:
        >>> import tempfile
        >>> file = Path(tempfile.mkdtemp()) / "classes.txt"
        >>> _ = file.write_text("cat\ndog\n")
        >>> read_classes(file)
        ('cat', 'dog')
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"--classes {str(path)!r}: cannot read it ({error})") from error
    if text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"--classes {str(path)!r}: invalid JSON ({error})") from error
        if isinstance(data, dict):
            try:
                data = [data[str(index)] for index in range(len(data))]
            except KeyError as error:
                raise InputError(f"--classes {str(path)!r}: keys must be 0 ... {len(data) - 1}") from error
        names = tuple(str(name) for name in data)
    else:
        names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names:
        raise InputError(f"--classes {str(path)!r} holds no class names")
    if len(set(names)) != len(names):
        raise InputError(f"--classes {str(path)!r}: class names must be unique")
    return names


def load_model(
    name: str,
    weights: str | Path | None,
    size: int | None = None,
    *,
    resize: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str = "cpu",
    classes: Path | None = None,
) -> LoadedModel:
    """Build the model named on the command line (see the module docstring): eval mode, on ``device``."""
    target_device = pick_device(device)
    weights_text = None if weights is None else str(weights)
    spec = _Spec()
    if name == "zfnet":
        model = _zfnet(weights_text, spec)
    elif name.startswith("timm:"):
        model = _timm(name.removeprefix("timm:"), weights_text, spec)
    elif ":" in name:
        model = _factory(name, spec)
        _local_weights(model, weights_text, spec)
    else:
        model = _torchvision(name, weights_text, spec)
    side = size or spec.size
    preprocessing = Preprocessing(
        size=side,
        resize=resize or (spec.resize if size is None and spec.resize else round(side * 256 / 224)),
        mean=_triple(mean, spec.mean, "--mean"),
        std=_triple(std, spec.std, "--std"),
        interpolation=spec.interpolation,
    )
    if preprocessing.resize < side:
        raise InputError(f"--resize {preprocessing.resize} is smaller than the crop --size {side}")
    if any(value <= 0 for value in preprocessing.std):
        raise InputError(f"--std {list(preprocessing.std)} must be positive")
    categories = read_classes(classes) if classes is not None else spec.categories
    return LoadedModel(model.eval().to(target_device), preprocessing, categories, spec.note, target_device, spec.demo)


@dataclass
class _Spec:
    """What building a model tells about it: defaults for preprocessing, class names, a description."""

    size: int = 224
    resize: int | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    categories: tuple[str, ...] | None = None
    note: str = ""
    demo: bool = False


def _zfnet(weights: str | None, spec: _Spec) -> nn.Module:
    from zf_attr.models import zfnet

    if weights is None or weights == "DEFAULT":
        model = zfnet(weights="DEFAULT")
        info = model.weights_info
        spec.size, spec.mean, spec.std, spec.categories = 112, info.mean, info.std, info.categories
        spec.note, spec.demo = "bundled ZFNet (shapes)", True
        return model
    path = Path(weights)
    model = _with_weights_file(lambda: zfnet(weights=path), path)
    spec.size, spec.note = model.config.input_size, f"ZFNet, {path}"
    return model


def _torchvision(name: str, weights: str | None, spec: _Spec) -> nn.Module:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        close = [candidate for candidate in available if name.lower() in candidate][:5]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(
            f"--model {name!r} is not a torchvision classifier, 'zfnet', timm:NAME or package.module:factory{hint}"
        )
    spec.size = 299 if name == "inception_v3" else 224
    kwargs: dict[str, Any] = {"weights": None}
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=False)
    named = _weights_enum(name, weights) if weights is not None and not Path(weights).is_file() else None
    if named is None:
        model = torchvision.models.get_model(name, **kwargs)
        spec.note = f"torchvision {name}"
        _local_weights(model, weights, spec)
        return model
    transforms = named.transforms()
    spec.size, spec.resize = int(transforms.crop_size[0]), int(transforms.resize_size[0])
    spec.mean, spec.std = tuple(transforms.mean), tuple(transforms.std)
    spec.interpolation = transforms.interpolation.value
    spec.categories = tuple(named.meta["categories"]) if named.meta.get("categories") else None
    spec.note = f"torchvision {name}, weights {type(named).__name__}.{named.name}"
    return _load_named(name, named)


def _weights_enum(name: str, weights: str) -> Any:
    """The weights enum member for ``weights`` (``DEFAULT``, ``IMAGENET1K_V1``, ``Enum.MEMBER``)."""
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    member = weights.rpartition(".")[2]
    prefix = weights.rpartition(".")[0]
    if prefix and prefix != enum.__name__:
        raise InputError(f"--weights {weights!r}: {prefix} are not the weights of {name} (they are {enum.__name__})")
    if member not in enum.__members__:
        looks_like_file = any(sep in weights for sep in "/\\") or Path(weights).suffix in (".pt", ".pth", ".bin")
        if looks_like_file or prefix:
            raise InputError(f"--weights {weights!r}: no such file or {enum.__name__} member")
        raise InputError(
            f"--weights {weights!r} is neither a file nor a weights name of {name}; "
            f"choose one of {', '.join(enum.__members__)}"
        )
    return enum[member]


def _load_named(name: str, weights: Any) -> nn.Module:
    """The torchvision model with ``weights``, from the hub cache or downloaded; offline, where to put the file."""
    import torchvision

    cache = Path(torch.hub.get_dir()) / "checkpoints"
    file = weights.url.rsplit("/", 1)[-1]
    try:
        return torchvision.models.get_model(name, weights=weights)
    except (URLError, OSError) as error:
        if (cache / file).is_file():
            raise InputError(f"--weights {weights!r}: cannot read {cache / file} ({error})") from error
        raise InputError(
            f"--weights {type(weights).__name__}.{weights.name}: {file} is not in the torch hub cache and cannot be "
            f"downloaded here ({type(error).__name__}); download {weights.url} into {cache}/ (or set TORCH_HOME)"
        ) from error


def _timm(name: str, weights: str | None, spec: _Spec) -> nn.Module:
    try:
        import timm
        from timm.data import resolve_data_config
    except ImportError as error:
        raise InputError("--model timm:NAME needs timm: pip install 'zf-attr[timm]'") from error
    if name not in timm.list_models():
        close = timm.list_models(f"*{name}*")[:5]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"--model 'timm:{name}' is not a timm model{hint}")
    pretrained = weights == "pretrained"
    try:
        model = timm.create_model(name, pretrained=pretrained)
    except Exception as error:  # timm's download and cache errors have many types
        raise InputError(f"--model timm:{name} --weights pretrained: {' '.join(str(error).split())[:300]}") from error
    config = resolve_data_config({}, model=model)
    spec.size = int(config["input_size"][-1])
    spec.resize = round(spec.size / config.get("crop_pct", 0.875))
    spec.mean, spec.std = tuple(config["mean"]), tuple(config["std"])
    spec.interpolation = config.get("interpolation", "bilinear")
    spec.note = f"timm {name}" + (", pretrained" if pretrained else "")
    if pretrained and getattr(model, "num_classes", None) == 1000:
        from timm.data import ImageNetInfo

        spec.categories = tuple(ImageNetInfo().label_descriptions(as_dict=False))
    if not pretrained:
        _local_weights(model, weights, spec)
    return model


def _factory(name: str, spec: _Spec) -> nn.Module:
    module_name, _, factory = name.partition(":")
    try:
        model = getattr(importlib.import_module(module_name), factory)()
    except (ImportError, AttributeError) as error:
        raise InputError(f"--model {name!r}: cannot load {factory!r} from {module_name!r} ({error})") from error
    if not isinstance(model, nn.Module):
        raise InputError(f"--model {name!r} did not give a torch.nn.Module")
    spec.note = name
    return model


def _local_weights(model: nn.Module, weights: str | None, spec: _Spec) -> None:
    if weights is None:
        spec.note += ", random-init weights (pass --weights for trained ones)"
        return
    from zf_attr.models.weights import load_state_dict_file

    path = Path(weights)
    if not path.is_file():
        raise InputError(f"--weights {weights!r}: no such file")
    _with_weights_file(lambda: model.load_state_dict(load_state_dict_file(path)), path)
    spec.note += f", weights {path}"


def _with_weights_file(load: Any, weights: Path) -> Any:
    try:
        return load()
    except (FileNotFoundError, ValueError, RuntimeError, KeyError) as error:
        raise InputError(f"--weights {str(weights)!r}: {' '.join(str(error).split())}") from error


def _triple(values: Sequence[float] | None, default: Sequence[float], flag: str) -> tuple[float, ...]:
    if values is None:
        return tuple(float(v) for v in default)
    if len(values) not in (1, 3):
        raise InputError(f"{flag} takes 1 or 3 numbers (one per RGB channel), got {len(values)}")
    return tuple(float(v) for v in values) * (3 // len(values))
