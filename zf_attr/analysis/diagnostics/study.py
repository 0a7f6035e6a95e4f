"""First-layer and second-layer diagnostics of an architecture (Zeiler & Fergus 2014, §4.1 and Fig. 6).

The paper found AlexNet's 11×11, stride-4 first layer to hold a mix of very high and very low frequency filters
with little in between, and dead filters; its second layer showed aliasing from the large stride. ZFNet's 7×7,
stride-2 first layer (and stride-2 second layer) fixed both. :func:`filter_diagnostics` measures each of these
on a probe set: the first layer's filters and their frequency content, dead or near-dead maps of chosen layers,
and two aliasing indicators.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from zf_attr._captum_compat import validate_model
from zf_attr._guard import fresh
from zf_attr._lifecycle import Attachment
from zf_attr.analysis._features import check_images
from zf_attr.analysis.diagnostics.spectra import BAND_EDGES, band_energy, near_nyquist_share, stride_aliasing
from zf_attr.attr._layers import resolve_layer
from zf_attr.attr._rectified import layer_map

__all__ = ["FilterDiagnostics", "filter_diagnostics"]


@dataclass(frozen=True)
class FilterDiagnostics:
    """What :func:`filter_diagnostics` measured.

    Attributes:
        layers: the convolution layers examined (the first is layer 1).
        filters: ``(C_out, C_in, k, k)`` the first layer's weights (the paper's filter grid).
        strides: layer → its stride; kernel: layer → its kernel size.
        activity: layer → ``(C,)`` fraction of probe positions (images × locations) where the map, read after
            the rectifier that follows the layer, is > 0.
        max_activation: layer → ``(C,)`` the largest value of each map over the probes.
        filter_rms: layer → ``(C,)`` RMS of each filter's weights.
        dead_filters: layer → indices of dead or near-dead maps: active on at most ``dead_rate`` of the positions,
            or a filter RMS at most ``weak_rms`` × the layer's median.
        band_energy: ``(C_out, 4)`` each first-layer filter's spectral energy share per band of
            :data:`~zf_attr.analysis.diagnostics.spectra.BAND_EDGES` (cycles/pixel).
        high_frequency_filters: first-layer filters with at least ``extreme_share`` of their energy in the top
            band (≥ 3/8 cycles/pixel).
        low_frequency_filters: first-layer filters with at least ``extreme_share`` in the bottom band (< 1/8).
        nyquist_energy: layer → share of the spectral energy of its *input* maps near their Nyquist frequency
            (``max(|fx|, |fy|) ≥ 3/8``): aliased input shows up there (the paper's layer-2 aliasing).
        stride_aliasing: layer → share of its full-rate response energy above the Nyquist frequency of its
            stride, which the stride folds back (0 for stride 1).
        probes: number of probe images.

    Example:
        >>> from zf_attr.models import zfnet
        >>> from zf_attr.models.shapes import ShapesDataset
        >>> probes = torch.stack([ShapesDataset(4, seed=4)[i][0] for i in range(4)])
        >>> result = filter_diagnostics(zfnet(weights="DEFAULT").eval(), probes)
        >>> result.layers, tuple(result.filters.shape), tuple(result.band_energy.shape)
        (['conv1', 'conv2'], (32, 3, 7, 7), (32, 4))
    """

    layers: list[str]
    filters: Tensor
    strides: dict[str, int]
    kernels: dict[str, int]
    activity: dict[str, Tensor]
    max_activation: dict[str, Tensor]
    filter_rms: dict[str, Tensor]
    dead_filters: dict[str, list[int]]
    band_energy: Tensor
    high_frequency_filters: list[int]
    low_frequency_filters: list[int]
    nyquist_energy: dict[str, float]
    stride_aliasing: dict[str, float]
    probes: int

    #: Draws the result: ``draw(result, path, **options)``, attached by the study's package from its figure
    #: module (which imports this type for typing only; this module never imports the figure: no import circle).
    draw: ClassVar[Callable[..., Path]]

    def summary(self) -> dict[str, Any]:
        """The headline numbers (per layer and for the first layer's filters) as plain values."""
        first = self.layers[0]
        return {
            "layers": {
                layer: {
                    "kernel": self.kernels[layer],
                    "stride": self.strides[layer],
                    "maps": int(self.activity[layer].numel()),
                    "dead": len(self.dead_filters[layer]),
                    "median_activity": round(float(self.activity[layer].median()), 4),
                    "nyquist_energy": round(self.nyquist_energy[layer], 4),
                    "stride_aliasing": round(self.stride_aliasing[layer], 4),
                }
                for layer in self.layers
            },
            "first_layer": {
                "layer": first,
                "band_edges": list(BAND_EDGES),
                "mean_band_energy": [round(float(v), 4) for v in self.band_energy.mean(dim=0)],
                "high_frequency_filters": len(self.high_frequency_filters),
                "low_frequency_filters": len(self.low_frequency_filters),
            },
            "probes": self.probes,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything but the filter weights as plain lists and numbers (for JSON)."""
        return {
            **self.summary(),
            "dead_filters": {layer: list(indices) for layer, indices in self.dead_filters.items()},
            "activity": {layer: values.tolist() for layer, values in self.activity.items()},
            "filter_rms": {layer: values.tolist() for layer, values in self.filter_rms.items()},
            "band_energy": self.band_energy.tolist(),
            "high_frequency_filter_indices": list(self.high_frequency_filters),
            "low_frequency_filter_indices": list(self.low_frequency_filters),
        }

    def save_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def save_figure(self, path: str | Path, **options: Any) -> Path:
        """Draw the filters, their frequency bands, map activity and aliasing.

        See :func:`zf_attr.analysis.diagnostics.figure.save_diagnostics_figure` for the options.
        """
        return type(self).draw(self, path, **options)


def filter_diagnostics(
    model: nn.Module,
    probe_images: Tensor,
    *,
    layers: Sequence[str | nn.Module] | None = None,
    dead_rate: float = 1e-3,
    weak_rms: float = 0.01,
    extreme_share: float = 0.5,
) -> FilterDiagnostics:
    """Measure the paper's first-layer and second-layer diagnostics on a probe set (Fig. 6).

    Args:
        model: the network, in eval mode; left as found.
        probe_images: probe images ``(N, C, H, W)``, preprocessed as the model expects.
        layers: ``Conv2d`` layers to examine, the first being "layer 1" (its filters are drawn and analysed);
            ``None``: the model's first two ``Conv2d`` layers in call order.
        dead_rate: a map active (> 0 after its rectifier) on at most this fraction of probe positions is dead.
        weak_rms: a filter whose weight RMS is at most this fraction of its layer's median is near-dead too.
        extreme_share: share of a first-layer filter's energy in the top (bottom) band that flags it as a
            high- (low-) frequency filter.

    Returns:
        A :class:`FilterDiagnostics`.

    Raises:
        TypeError, ValueError: bad probe images, unknown layers or layers that are not ``Conv2d``, thresholds
            out of range; the message names the argument.
    """
    validate_model(model)
    probes = check_images(probe_images, "probe_images")
    for name, value in (("dead_rate", dead_rate), ("weak_rms", weak_rms), ("extreme_share", extreme_share)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"{name}={value!r} must be a number in [0, 1]")
    parameter = next(model.parameters(), None)
    if parameter is not None:
        probes = probes.to(parameter.device, parameter.dtype)
    modules = _conv_layers(model, probes[:1], layers)
    inputs, outputs = _run(model, modules, probes)
    activity, maxima, rms, dead, nyquist, aliasing = {}, {}, {}, {}, {}, {}
    strides, kernels = {}, {}
    for name, conv in modules.items():
        reading = layer_map(model, name, conv, (probes[:1],))
        maps = reading(outputs[name])
        activity[name] = (maps > 0).double().mean(dim=(0, 2, 3)).float().cpu()
        maxima[name] = maps.amax(dim=(0, 2, 3)).cpu()
        rms[name] = conv.weight.detach().pow(2).mean(dim=(1, 2, 3)).sqrt().cpu()
        weak = rms[name] <= weak_rms * torch.quantile(rms[name].double(), 0.5).float()
        dead[name] = ((activity[name] <= dead_rate) | weak).nonzero().flatten().tolist()
        nyquist[name] = near_nyquist_share(inputs[name])
        strides[name], kernels[name] = int(conv.stride[0]), int(conv.kernel_size[0])
        aliasing[name] = stride_aliasing(inputs[name], conv.weight, strides[name], conv.padding)
    first = next(iter(modules.values()))
    bands = band_energy(first.weight)
    return FilterDiagnostics(
        layers=list(modules),
        filters=first.weight.detach().cpu().clone(),
        strides=strides,
        kernels=kernels,
        activity=activity,
        max_activation=maxima,
        filter_rms=rms,
        dead_filters=dead,
        band_energy=bands,
        high_frequency_filters=(bands[:, -1] >= extreme_share).nonzero().flatten().tolist(),
        low_frequency_filters=(bands[:, 0] >= extreme_share).nonzero().flatten().tolist(),
        nyquist_energy=nyquist,
        stride_aliasing=aliasing,
        probes=len(probes),
    )


def _conv_layers(model: nn.Module, example: Tensor, layers: Sequence[str | nn.Module] | None) -> dict[str, nn.Module]:
    if layers is None:
        names = {module: name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)}
        order: list[str] = []
        with Attachment() as hooks, torch.no_grad():
            for module in names:
                hooks.hook(module.register_forward_hook, lambda m, a, o: order.append(names[m]))
            model(*fresh((example,)))
        called = list(dict.fromkeys(order))
        if not called:
            raise ValueError("layers=None needs a model with Conv2d layers; pass layers= explicitly")
        layers = called[:2]
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    if not layers:
        raise ValueError("layers is empty; name at least one Conv2d layer (or pass None)")
    modules: dict[str, nn.Module] = {}
    for layer in layers:
        try:
            name, module = resolve_layer(model, layer)
        except (TypeError, ValueError) as error:
            raise type(error)(f"layers: {error}") from None
        if not isinstance(module, nn.Conv2d) or module.groups != 1:
            raise ValueError(f"layers: {name!r} is a {type(module).__name__}; the diagnostics need plain Conv2d layers")
        modules[name] = module
    return modules


def _run(
    model: nn.Module, modules: dict[str, nn.Module], probes: Tensor
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Each layer's input and (raw) output on the probes, from one forward pass."""
    inputs: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}

    def keep(name: str, args: tuple, output: Tensor) -> None:
        inputs.setdefault(name, args[0].detach().clone())
        outputs.setdefault(name, output.detach().clone())

    with Attachment() as hooks, torch.no_grad():  # the probes' copy: an in-place first layer must not write them
        for name, module in modules.items():
            hooks.hook(module.register_forward_hook, lambda m, a, o, n=name: keep(n, a, o))
        model(*fresh((probes,)))
    missing = [name for name in modules if name not in outputs]
    if missing:
        raise ValueError(f"layers {missing} were not called during the forward pass")
    return inputs, outputs
