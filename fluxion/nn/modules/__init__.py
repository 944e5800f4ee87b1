"""The layer classes of ``fluxion.nn``."""

from fluxion.nn.modules.activation import (
    ELU,
    GELU,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from fluxion.nn.modules.attention import MultiheadAttention
from fluxion.nn.modules.container import (
    ModuleDict,
    ModuleList,
    ParameterDict,
    ParameterList,
    Sequential,
)
from fluxion.nn.modules.conv import Conv1d, Conv2d, ConvTranspose2d
from fluxion.nn.modules.dropout import Dropout, Dropout2d
from fluxion.nn.modules.linear import Flatten, Identity, Linear, Unflatten
from fluxion.nn.modules.loss import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)
from fluxion.nn.modules.normalization import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm
from fluxion.nn.modules.pooling import (
    AdaptiveAvgPool2d,
    AvgPool1d,
    AvgPool2d,
    MaxPool1d,
    MaxPool2d,
)
from fluxion.nn.modules.rnn import (
    GRU,
    LSTM,
    RNN,
    GRUCell,
    LSTMCell,
    RNNBase,
    RNNCell,
    RNNCellBase,
)
from fluxion.nn.modules.sparse import Embedding
from fluxion.nn.modules.transformer import TransformerEncoder, TransformerEncoderLayer

__all__ = [
    "ELU", "GELU", "LeakyReLU", "LogSoftmax", "ReLU", "Sigmoid", "SiLU", "Softmax", "Softplus",
    "Tanh", "ModuleDict", "ModuleList", "ParameterDict", "ParameterList", "Sequential",
    "Conv1d", "Conv2d", "ConvTranspose2d", "Dropout", "Dropout2d", "Flatten", "Identity",
    "Linear", "Unflatten", "BCELoss", "BCEWithLogitsLoss", "CrossEntropyLoss", "HuberLoss",
    "KLDivLoss", "L1Loss", "MSELoss", "NLLLoss", "SmoothL1Loss", "BatchNorm1d", "BatchNorm2d",
    "GroupNorm", "LayerNorm", "AdaptiveAvgPool2d", "AvgPool1d", "AvgPool2d", "MaxPool1d",
    "MaxPool2d", "Embedding",
    "MultiheadAttention", "RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell",
    "GRUCell", "TransformerEncoder", "TransformerEncoderLayer",
]
