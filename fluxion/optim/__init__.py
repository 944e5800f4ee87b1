"""``fluxion.optim``: optimizers and learning-rate schedulers with PyTorch's API and numbers.

Each optimizer follows PyTorch's single-tensor (``foreach=False``) algorithm, written with
Fluxion tensor ops under ``no_grad``; ``state_dict()`` uses PyTorch's format.

>>> import fluxion
>>> from fluxion.nn.parameter import Parameter
>>> from fluxion import optim
>>> w = Parameter(fluxion.tensor([3.0]))
>>> opt = optim.SGD([w], lr=0.25)
>>> sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
>>> for _ in range(2):
...     opt.zero_grad()
...     (w ** 2).sum().backward()
...     opt.step()
...     sched.step()
>>> w.detach(), sched.get_last_lr()
(tensor([1.1250]), [0.0625])
"""

from fluxion.optim import lr_scheduler
from fluxion.optim.adadelta import Adadelta
from fluxion.optim.adagrad import Adagrad
from fluxion.optim.adam import Adam
from fluxion.optim.adamw import AdamW
from fluxion.optim.optimizer import Optimizer
from fluxion.optim.rmsprop import RMSprop
from fluxion.optim.sgd import SGD

__all__ = [
    "Optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "RMSprop",
    "Adagrad",
    "Adadelta",
    "lr_scheduler",
]
