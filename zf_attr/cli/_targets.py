"""What ``--target`` names: a class index, a class name, ``from-folder``, or nothing (the predicted class)."""

from __future__ import annotations

from collections.abc import Sequence

from zf_attr.cli._common import CommandError
from zf_attr.cli._images import InputFile

__all__ = ["FROM_FOLDER", "TargetRule"]

FROM_FOLDER = "from-folder"


class TargetRule:
    """Resolves ``--target`` for each input, checked against the model's classes before any work.

    Args:
        value: ``--target`` as typed (``None``: explain the predicted class).
        classes: the model's class names, if any.
        num_classes: the number of outputs of the model.

    Example:
        >>> rule = TargetRule("dog", ("cat", "dog"), 2)
        >>> rule.fixed, rule.given
        (1, True)
        >>> TargetRule(None, None, 10).given
        False
    """

    def __init__(self, value: str | None, classes: Sequence[str] | None, num_classes: int) -> None:
        self.value, self.classes, self.num_classes = value, classes, num_classes
        self.from_folder = value == FROM_FOLDER
        self.fixed: int | None = None
        if value is not None and not self.from_folder:
            self.fixed = self._index(value, "--target")

    @property
    def given(self) -> bool:
        """A target was chosen by the user (not the prediction)."""
        return self.value is not None

    def _index(self, name: str, what: str) -> int:
        if self.classes is not None and name in self.classes:
            return list(self.classes).index(name)
        lowered = [c.casefold().replace("_", " ") for c in self.classes or ()]
        if name.casefold().replace("_", " ") in lowered:
            return lowered.index(name.casefold().replace("_", " "))
        if name.lstrip("-").isdigit():
            index = int(name)
            if not 0 <= index < self.num_classes:
                raise CommandError(f"{what} {index} is out of range for {self.num_classes} classes")
            return index
        known = f"; the model's classes are {', '.join(list(self.classes)[:8])}, ..." if self.classes else ""
        raise CommandError(f"{what} {name!r} is neither a class index nor a class name of the model{known}")

    def check_folders(self, inputs: Sequence[InputFile]) -> None:
        """With ``from-folder``: every input's folder must name a class (or be its index), else stop before work."""
        if not self.from_folder:
            return
        unknown = []
        for folder in dict.fromkeys(item.folder for item in inputs):
            try:
                self._index(folder, "--target from-folder:")
            except CommandError:
                unknown.append(folder)
        if unknown:
            hint = "" if self.classes else " (the model has no class names: give them with --classes FILE)"
            raise CommandError(
                f"--target from-folder: folder names {', '.join(repr(u) for u in unknown[:5])} are not class names "
                f"or indices of the model{hint}"
            )

    def target(self, item: InputFile, predicted: int) -> int:
        """The class to explain for ``item``, whose predicted class is ``predicted``."""
        if self.fixed is not None:
            return self.fixed
        if self.from_folder:
            return self._index(item.folder, "--target from-folder:")
        return predicted
