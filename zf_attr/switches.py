"""What one intercepted forward pass saw: max-pool switches, rectifier and other activation calls.

Every call is named after the module that made it, the way users know the model:

* a call made by a built-in torch layer (``nn.ReLU``, ``nn.MaxPool2d``) carries its name: ``"layer1.0.relu"``;
* a functional call inside a module's ``forward`` (``F.relu`` in GoogLeNet's ``BasicConv2d``, ``F.max_pool2d``
  in Inception-v3) is named ``"<module>:<function>"``: ``"inception3a.branch1:relu"``, ``"Mixed_6a:max_pool2d"``;
  calls in the top-level ``forward`` use ``"<model>"`` as the module name;
* the second, third, ... call under the same name gets ``"#1"``, ``"#2"``, ...: ResNet's shared ``self.relu``
  gives ``"layer1.0.relu"`` and ``"layer1.0.relu#1"``.

Example:
    >>> import torch, torch.nn as nn
    >>> import zf_attr
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(3, 2))
    >>> with zf_attr.record_switches(model) as trace:
    ...     _ = model(torch.randn(1, 3, 16, 16))
    >>> pool = trace.pool("2")
    >>> pool.indices.shape, pool.input_shape
    (torch.Size([1, 4, 6, 6]), torch.Size([1, 4, 14, 14]))
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["ActivationCall", "ForwardTrace", "PoolSwitches"]


@dataclass(frozen=True)
class PoolSwitches:
    """The switches of one max-pool call: where each pooling window found its maximum.

    Attributes:
        name: unique name of the call (see the module docstring).
        module_name: dotted name of the module that made the call (``""`` for the top level).
        call_index: how many calls under the same name came before this one.
        indices: for every pooled output element, the flat index ``h * W + w`` of its maximum in the
            (unpadded) input plane, shaped like the output; ``int64``, detached.
        input_shape: shape of the pool's input.
        output_shape: shape of the pool's output.
        kernel_size, stride, padding, dilation: the window geometry, as pairs.
        ceil_mode: whether the output size was rounded up.
    """

    name: str
    module_name: str
    call_index: int
    indices: Tensor
    input_shape: torch.Size
    output_shape: torch.Size
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    ceil_mode: bool

    def unpool(self, signal: Tensor) -> Tensor:
        """Place ``signal`` (shaped like the output) at the switch locations of an input-shaped zero tensor.

        Where overlapping windows chose the same input location their values are **added** (the transpose
        of max-pooling), which ``torch.nn.functional.max_unpool2d`` does not guarantee.

        Args:
            signal: tensor with the pool's output shape.

        Returns:
            Tensor with the pool's input shape.
        """
        if signal.shape != self.output_shape:
            raise ValueError(
                f"signal has shape {tuple(signal.shape)} but pool {self.name!r} produced {tuple(self.output_shape)}"
            )
        plane = self.input_shape[-2] * self.input_shape[-1]
        flat = signal.new_zeros((*self.input_shape[:-2], plane))
        flat.scatter_add_(-1, self.indices.flatten(-2).to(signal.device), signal.flatten(-2))
        return flat.reshape(self.input_shape)


@dataclass(frozen=True)
class ActivationCall:
    """One call of an activation or normalisation function seen in the forward pass.

    Attributes:
        name: unique name of the call (see the module docstring).
        module_name: dotted name of the module that made the call.
        function: the torch function called, e.g. ``"relu"``, ``"hardtanh"``, ``"silu"``, ``"batch_norm"``.
        kind: what it is, e.g. ``"ReLU"``, ``"ReLU6"``, ``"SiLU"``, ``"sigmoid"``.
        treatment: what the backward pass does there: ``"rule"`` (the rectifier rule), ``"gradient"``
            (true gradient), ``"rectified"`` (ReLU-like, rectified under the ``"rectify"`` policy) or
            ``"skipped"`` (identity, strict variant).

    Example:
        >>> import torch, torchvision, zf_attr
        >>> model = torchvision.models.resnet18(weights=None).eval()
        >>> with zf_attr.record_switches(model) as trace:
        ...     _ = model(torch.randn(1, 3, 32, 32))
        >>> call = trace.rectifiers[1]
        >>> call.name, call.module_name, call.kind
        ('layer1.0.relu', 'layer1.0.relu', 'ReLU')
    """

    name: str
    module_name: str
    function: str
    kind: str
    treatment: str


@dataclass
class ForwardTrace:
    """Everything an interception saw during one or more forward passes.

    Attributes:
        pools: switches of every max-pool call, in call order.
        rectifiers: every rectifier call (ReLU, ReLU6, LeakyReLU; module or functional).
        other_activations: every non-rectifier activation call (SiLU, GELU, sigmoid, ...).
        normalizations: every normalisation call (BatchNorm, LRN, LayerNorm, GroupNorm, InstanceNorm).

    Example:
        >>> import torch, torchvision, zf_attr
        >>> model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).eval()
        >>> with zf_attr.record_switches(model) as trace:
        ...     _ = model(torch.randn(1, 3, 64, 64))
        >>> trace
        ForwardTrace(pools=13, rectifiers=57, other_activations=0, normalizations=57)
        >>> trace.rectifiers[0].name                 # GoogLeNet's functional F.relu, seen and named
        'conv1:relu'
    """

    pools: list[PoolSwitches] = field(default_factory=list)
    rectifiers: list[ActivationCall] = field(default_factory=list)
    other_activations: list[ActivationCall] = field(default_factory=list)
    normalizations: list[ActivationCall] = field(default_factory=list)

    def pool(self, name: str) -> PoolSwitches:
        """Return the switches of the pool call called ``name``.

        Raises:
            KeyError: no pool call has that name; the message lists the recorded names.
        """
        for switches in self.pools:
            if switches.name == name:
                return switches
        names = [switches.name for switches in self.pools]
        raise KeyError(f"no max-pool call named {name!r}; recorded pool calls: {names}")

    @property
    def pool_names(self) -> list[str]:
        """Names of the recorded pool calls, in call order."""
        return [switches.name for switches in self.pools]

    def clear(self) -> None:
        """Forget everything recorded so far."""
        self.pools.clear()
        self.rectifiers.clear()
        self.other_activations.clear()
        self.normalizations.clear()

    def unhonoured_report(self, method: str, rule: str = "deconvnet") -> str | None:
        """One message naming what a rectifier rule could not honour in this trace, or ``None``.

        Args:
            method: name of the attribution method, used in the message.
            rule: name of the backward rule the method applied.
        """
        problems = []
        if not self.rectifiers:
            honoured = any(call.treatment == "rectified" for call in self.other_activations)
            problems.append(
                "the model has no rectifiers (ReLU, ReLU6, LeakyReLU; modules or functional)"
                + ("" if honoured else f", so {method} equals the plain gradient")
            )
        elif rule == "deconvnet" and not self.pools and not self.other_activations:
            problems.append(
                "the model has no max-pool calls, so no switches carry the image into the projection: on a "
                "conv/ReLU/BatchNorm network every image gets the same map for a given target"
            )
        if self.other_activations:
            counts = Counter(call.kind for call in self.other_activations)
            kinds = ", ".join(f"{kind} x{count}" for kind, count in sorted(counts.items()))
            descriptions = {"gradient": "their true gradient", "rectified": "a rectified signal"}
            treatments = " / ".join(
                descriptions[t] for t in sorted({call.treatment for call in self.other_activations})
            )
            first = self.other_activations[0].name
            problems.append(
                f"non-rectifier activations ({kinds}; first at {first!r}) pass {treatments} (see nonrectifier_policy)"
            )
        if not problems:
            return None
        return f"{method}: " + "; ".join(problems) + "."

    def __repr__(self) -> str:
        return (
            f"ForwardTrace(pools={len(self.pools)}, rectifiers={len(self.rectifiers)}, "
            f"other_activations={len(self.other_activations)}, normalizations={len(self.normalizations)})"
        )
