"""The op table. Importing this package registers every primitive in ``OPS``."""

from fluxion.ops import elementwise, index, linalg, movement, nn, reduce  # noqa: F401
from fluxion.ops.registry import KINDS, OPS, Op, Spec, apply, defop

__all__ = ["KINDS", "OPS", "Op", "Spec", "apply", "defop"]
