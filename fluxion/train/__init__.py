"""``fluxion.train``: the fit loop, progress bars, metrics and the example recipes."""

from fluxion.train.loop import FitConfig, evaluate, fit
from fluxion.train.metrics import MetricsLog
from fluxion.train.models import GPT, MNISTNet
from fluxion.train.progress import Progress

__all__ = ["GPT", "FitConfig", "MNISTNet", "MetricsLog", "Progress", "evaluate", "fit"]
