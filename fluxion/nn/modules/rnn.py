"""Recurrent layers: ``RNN``, ``LSTM``, ``GRU`` and their single-step cells.

The recurrence is a Python loop over time steps written with Fluxion tensor ops, so
autograd (and the compiler's tracer) see ordinary primitives. The input-to-hidden
projection of a whole layer is one matrix product over all time steps; only the
hidden-to-hidden product runs per step. Parameter names, shapes, gate order and the
default initialisation U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)) are PyTorch's.
Packed sequences are not supported.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

from fluxion import creation
from fluxion import functional as FX
from fluxion.nn import functional as F
from fluxion.nn import init
from fluxion.nn.module import Module
from fluxion.nn.parameter import Parameter
from fluxion.tensor import Tensor

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


# --- one time step (shared by the layers and the cells) --------------------------------
def _rnn_step(gi: Tensor, h: Tensor, w_hh_t: Tensor, relu: bool) -> Tensor:
    """Elman step; ``gi`` already holds ``W_ih x + b_ih + b_hh``."""
    pre = gi + h @ w_hh_t
    return F.relu(pre) if relu else FX.tanh(pre)


def _lstm_step(gi: Tensor, h: Tensor, c: Tensor, w_hh_t: Tensor,
               w_hr_t: Tensor | None) -> tuple[Tensor, Tensor]:
    """LSTM step (gates i, f, g, o); ``gi`` already holds ``W_ih x + b_ih + b_hh``."""
    gates = gi + h @ w_hh_t
    i, f, g, o = gates.chunk(4, -1)
    c = FX.sigmoid(f) * c + FX.sigmoid(i) * FX.tanh(g)
    h = FX.sigmoid(o) * FX.tanh(c)
    if w_hr_t is not None:
        h = h @ w_hr_t
    return h, c


def _gru_step(gi: Tensor, h: Tensor, w_hh_t: Tensor, b_hh: Tensor | None) -> Tensor:
    """GRU step (gates r, z, n); ``gi`` holds ``W_ih x + b_ih``; ``r`` multiplies
    ``W_hn h + b_hn`` as in PyTorch (and cuDNN)."""
    gh = h @ w_hh_t
    if b_hh is not None:
        gh = gh + b_hh
    i_r, i_z, i_n = gi.chunk(3, -1)
    h_r, h_z, h_n = gh.chunk(3, -1)
    r = FX.sigmoid(i_r + h_r)
    z = FX.sigmoid(i_z + h_z)
    n = FX.tanh(i_n + r * h_n)
    return n + z * (h - n)  # == (1 - z) * n + z * h


def _time_steps(x: Tensor) -> list[Tensor]:
    """``x.unbind(0)``, via about sqrt(T) blocks for long sequences: each slice's backward
    pads its gradient to the full shape of what it was cut from, so slicing T steps straight
    from the (T, B, G) projection costs O(T^2) in the backward pass; blocks make it
    O(T^1.5)."""
    steps = x.shape[0]
    if steps <= 16:
        return list(x.unbind(0))
    out: list[Tensor] = []
    for blk in x.split(math.isqrt(steps - 1) + 1, 0):
        out.extend(blk.unbind(0))
    return out


def _input_projection(mode: str, x: Tensor, w_ih: Tensor, b_ih: Tensor | None,
                      b_hh: Tensor | None) -> Tensor:
    """``x W_ih^T + b`` for every step at once; the hidden bias is folded in except for GRU
    (whose ``b_hn`` sits inside the reset gate's product)."""
    out = x @ w_ih.t()
    if b_ih is not None:
        bias = b_ih if mode == "GRU" or b_hh is None else b_ih + b_hh
        out = out + bias
    return out


# --- the multi-layer modules -------------------------------------------------------------
class RNNBase(Module):
    """Base class of :class:`RNN`, :class:`LSTM` and :class:`GRU` (PyTorch's ``RNNBase``):
    creates the per-layer, per-direction parameters and runs the stacked recurrence.

    >>> import fluxion
    >>> m = fluxion.nn.RNNBase("GRU", 4, 3)
    >>> [n for n, _ in m.named_parameters()]
    ['weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0']
    """

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        if (not isinstance(dropout, numbers.Number) or isinstance(dropout, bool)
                or not 0 <= dropout <= 1):
            raise ValueError("dropout should be a number in range [0, 1] representing the "
                             "probability of an element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so "
                          "non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={dropout} and num_layers={num_layers}", stacklevel=2)
        if not isinstance(bias, bool):
            raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first should be of type bool, got: "
                            f"{type(batch_first).__name__}")
        if not isinstance(input_size, int):
            raise TypeError(f"input_size should be of type int, got: {type(input_size).__name__}")
        if input_size <= 0:
            raise ValueError("input_size must be greater than zero")
        if not isinstance(hidden_size, int):
            raise TypeError(f"hidden_size should be of type int, got: "
                            f"{type(hidden_size).__name__}")
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable "
                             "projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if mode not in _GATES:
            raise ValueError("Unrecognized RNN mode: " + mode)
        if proj_size and mode != "LSTM":
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        num_directions = 2 if bidirectional else 1
        gate_size = _GATES[mode] * hidden_size
        real_hidden = proj_size if proj_size > 0 else hidden_size
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else real_hidden * num_directions
            for direction in range(num_directions):
                sfx = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                params = [("weight_ih", (gate_size, layer_input)),
                          ("weight_hh", (gate_size, real_hidden))]
                if bias:
                    params += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                if proj_size > 0:
                    params += [("weight_hr", (proj_size, hidden_size))]
                names = []
                for base, shape in params:
                    setattr(self, base + sfx, Parameter(creation.empty(*shape, dtype=dtype)))
                    names.append(base + sfx)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as PyTorch."""
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    def flatten_parameters(self) -> None:
        """No-op (PyTorch compacts weights for cuDNN here); kept so user code runs."""

    @property
    def _flat_weights(self) -> list[Parameter | None]:
        return [getattr(self, n, None) for n in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[Parameter]]:
        """The parameters grouped per layer and direction, in PyTorch's order."""
        return [[getattr(self, n) for n in names] for names in self._all_weights]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s

    # --- argument checks (PyTorch's messages) ------------------------------------------------
    def _check_input(self, input: Tensor) -> None:
        w = self._flat_weights[0]
        if w is not None and input.dtype != w.dtype:
            raise ValueError(f"RNN input dtype ({input.dtype}) does not match weight dtype "
                             f"({w.dtype}). Convert input: input.to({w.dtype}), or convert "
                             f"model: model.to({input.dtype})")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected "
                               f"{self.input_size}, got {input.shape[-1]}")

    def _expected_hidden(self, batch: int, size: int) -> tuple[int, int, int]:
        return (self.num_layers * (2 if self.bidirectional else 1), batch, size)

    @staticmethod
    def _check_hidden(hx: Tensor, expected: tuple[int, int, int],
                      msg: str = "Expected hidden size {}, got {}") -> None:
        if tuple(hx.shape) != expected:
            raise RuntimeError(msg.format(expected, list(hx.shape)))

    def _prepare(self, input: Tensor, hx: Any) -> tuple[Tensor, Any, bool]:
        """Validate; make the input time-major (T, B, F) and batched; return (input, hx,
        is_batched) with ``hx`` unsqueezed to 3-D when the input was unbatched."""
        name = "RNN" if self.mode.startswith("RNN") else self.mode
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.ndim}D "
                             "tensor instead")
        is_batched = input.ndim == 3
        if not is_batched:
            input = input.unsqueeze(1)
        elif self.batch_first:
            input = input.transpose(0, 1)
        if hx is not None:
            parts = hx if self.mode == "LSTM" else (hx,)
            want = 3 if is_batched else 2
            if any(p.ndim != want for p in parts):
                kind = "batched 3-D" if is_batched else "unbatched 2-D"
                if self.mode == "LSTM":
                    got = f"({parts[0].ndim}-D, {parts[1].ndim}-D) tensors"
                    what = "hx and cx"
                else:
                    got, what = f"{parts[0].ndim}-D tensor", "hx"
                raise RuntimeError(f"For {kind} input, {what} should also be {want}-D but "
                                   f"got {got}")
            if not is_batched:
                parts = tuple(p.unsqueeze(1) for p in parts)
            hx = parts if self.mode == "LSTM" else parts[0]
        self._check_input(input)
        return input, hx, is_batched

    # --- the recurrence ----------------------------------------------------------------------
    def _run(self, x: Tensor, h0: Tensor, c0: Tensor | None
             ) -> tuple[Tensor, Tensor, Tensor | None]:
        """x: (T, B, F) time-major. Returns output (T, B, D*H_out), h_n, c_n."""
        num_directions = 2 if self.bidirectional else 1
        steps = x.shape[0]
        h_n: list[Tensor] = []
        c_n: list[Tensor] = []
        layer_input = x
        for layer in range(self.num_layers):
            outs = []
            for direction in range(num_directions):
                idx = layer * num_directions + direction
                names = self._all_weights[idx]
                p = {n.split("_l")[0]: getattr(self, n) for n in names}
                gi_all = _input_projection(self.mode, layer_input, p["weight_ih"],
                                           p.get("bias_ih"), p.get("bias_hh"))
                gis = _time_steps(gi_all)
                w_hh_t = p["weight_hh"].t()
                w_hr = p.get("weight_hr")
                w_hr_t = w_hr.t() if w_hr is not None else None
                b_hh = p.get("bias_hh")
                h = h0[idx]
                c = c0[idx] if c0 is not None else None
                order = range(steps - 1, -1, -1) if direction == 1 else range(steps)
                ys: list[Tensor] = [None] * steps  # type: ignore[list-item]
                for t in order:
                    if self.mode == "LSTM":
                        h, c = _lstm_step(gis[t], h, c, w_hh_t, w_hr_t)  # type: ignore[arg-type]
                    elif self.mode == "GRU":
                        h = _gru_step(gis[t], h, w_hh_t, b_hh)
                    else:
                        h = _rnn_step(gis[t], h, w_hh_t, self.mode == "RNN_RELU")
                    ys[t] = h
                outs.append(FX.stack(ys, 0))
                h_n.append(h)
                if c is not None:
                    c_n.append(c)
            layer_input = outs[0] if num_directions == 1 else FX.cat(outs, -1)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, True)
        return layer_input, FX.stack(h_n, 0), (FX.stack(c_n, 0) if c_n else None)

    def _finish(self, output: Tensor, is_batched: bool) -> Tensor:
        if not is_batched:
            return output.squeeze(1)
        return output.transpose(0, 1) if self.batch_first else output


class RNN(RNNBase):
    """Multi-layer Elman RNN: ``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``
    (or ReLU). Returns ``(output, h_n)``; input (L, N, H_in), (N, L, H_in) with
    ``batch_first``, or unbatched (L, H_in).

    >>> import fluxion
    >>> rnn = fluxion.nn.RNN(10, 20, num_layers=2)
    >>> out, h_n = rnn(fluxion.randn(5, 3, 10), fluxion.zeros(2, 3, 20))
    >>> out.shape, h_n.shape
    (fluxion.Size([5, 3, 20]), fluxion.Size([2, 3, 20]))
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device: Any = None,
                 dtype: Any = None) -> None:
        if nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or "
                             "'relu'.")
        self.nonlinearity = nonlinearity
        super().__init__(mode, input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, 0, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, hx, is_batched = self._prepare(input, hx)
        expected = self._expected_hidden(x.shape[1], self.hidden_size)
        if hx is None:
            hx = creation.zeros(*expected, dtype=x.dtype)
        self._check_hidden(hx, expected)
        out, h_n, _ = self._run(x, hx, None)
        return self._finish(out, is_batched), (h_n if is_batched else h_n.squeeze(1))


class LSTM(RNNBase):
    """Multi-layer LSTM with PyTorch's gate order (i, f, g, o) and optional projection
    (``proj_size``). Returns ``(output, (h_n, c_n))``.

    >>> import fluxion
    >>> lstm = fluxion.nn.LSTM(10, 20, batch_first=True, bidirectional=True)
    >>> out, (h_n, c_n) = lstm(fluxion.randn(3, 5, 10))
    >>> out.shape, h_n.shape, c_n.shape
    (fluxion.Size([3, 5, 40]), fluxion.Size([2, 3, 20]), fluxion.Size([2, 3, 20]))
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, proj_size, device, dtype)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        x, hx, is_batched = self._prepare(input, hx)
        real_hidden = self.proj_size if self.proj_size > 0 else self.hidden_size
        exp_h = self._expected_hidden(x.shape[1], real_hidden)
        exp_c = self._expected_hidden(x.shape[1], self.hidden_size)
        if hx is None:
            hx = (creation.zeros(*exp_h, dtype=x.dtype), creation.zeros(*exp_c, dtype=x.dtype))
        self._check_hidden(hx[0], exp_h, "Expected hidden[0] size {}, got {}")
        self._check_hidden(hx[1], exp_c, "Expected hidden[1] size {}, got {}")
        out, h_n, c_n = self._run(x, hx[0], hx[1])
        assert c_n is not None
        if not is_batched:
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return self._finish(out, is_batched), (h_n, c_n)


class GRU(RNNBase):
    """Multi-layer GRU with PyTorch's gates (r, z, n) and ``n = tanh(W_in x + b_in +
    r * (W_hn h + b_hn))``. Returns ``(output, h_n)``.

    >>> import fluxion
    >>> gru = fluxion.nn.GRU(10, 20, num_layers=2)
    >>> out, h_n = gru(fluxion.randn(5, 10))  # unbatched
    >>> out.shape, h_n.shape
    (fluxion.Size([5, 20]), fluxion.Size([2, 20]))
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, device: Any = None, dtype: Any = None) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, 0, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, hx, is_batched = self._prepare(input, hx)
        expected = self._expected_hidden(x.shape[1], self.hidden_size)
        if hx is None:
            hx = creation.zeros(*expected, dtype=x.dtype)
        self._check_hidden(hx, expected)
        out, h_n, _ = self._run(x, hx, None)
        return self._finish(out, is_batched), (h_n if is_batched else h_n.squeeze(1))


# --- cells ------------------------------------------------------------------------------------
class RNNCellBase(Module):
    """Base class of the single-step cells: ``weight_ih`` (chunks*H, I), ``weight_hh``
    (chunks*H, H), optional ``bias_ih`` / ``bias_hh``, all ~ U(±1/sqrt(hidden_size)).

    >>> import fluxion
    >>> fluxion.nn.RNNCellBase(3, 2, True, num_chunks=4).weight_ih.shape
    fluxion.Size([8, 3])
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool, num_chunks: int,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.weight_ih = Parameter(creation.empty(num_chunks * hidden_size, input_size,
                                                  dtype=dtype))
        self.weight_hh = Parameter(creation.empty(num_chunks * hidden_size, hidden_size,
                                                  dtype=dtype))
        if bias:
            self.bias_ih = Parameter(creation.empty(num_chunks * hidden_size, dtype=dtype))
            self.bias_hh = Parameter(creation.empty(num_chunks * hidden_size, dtype=dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every parameter ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        return s

    def _batched(self, name: str, input: Tensor, hx: tuple[Tensor | None, ...]
                 ) -> tuple[Tensor, list[Tensor], bool]:
        if input.ndim not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.ndim}D "
                             "instead")
        for i, h in enumerate(hx):
            if h is not None and h.ndim not in (1, 2):
                what = f"hx[{i}]" if len(hx) > 1 else "hidden"
                raise ValueError(f"{name}: Expected {what} to be 1D or 2D, got {h.ndim}D "
                                 "instead")
        is_batched = input.ndim == 2
        if not is_batched:
            input = input.unsqueeze(0)
        if input.shape[1] != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.shape[1]} "
                               f"expected {self.input_size}")
        out = []
        for i, h in enumerate(hx):
            if h is None:
                h = creation.zeros(input.shape[0], self.hidden_size, dtype=input.dtype)
            elif not is_batched:
                h = h.unsqueeze(0)
            if h.shape[0] != input.shape[0]:
                raise RuntimeError(f"Input batch size {input.shape[0]} doesn't match "
                                   f"hidden{i} batch size {h.shape[0]}")
            if h.shape[1] != self.hidden_size:
                raise RuntimeError(f"hidden{i} has inconsistent hidden_size: got {h.shape[1]}, "
                                   f"expected {self.hidden_size}")
            out.append(h)
        return input, out, is_batched

    def _gi(self, input: Tensor, fold_hh: bool) -> Tensor:
        return _input_projection("LSTM" if fold_hh else "GRU", input, self.weight_ih,
                                 self.bias_ih, self.bias_hh)


class RNNCell(RNNCellBase):
    """One Elman step: ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`` (or ReLU).

    >>> import fluxion
    >>> cell = fluxion.nn.RNNCell(10, 20, nonlinearity="relu")
    >>> cell(fluxion.randn(3, 10)).shape
    fluxion.Size([3, 20])
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device: Any = None, dtype: Any = None) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=1, device=device,
                         dtype=dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        if self.nonlinearity not in ("tanh", "relu"):
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        x, (h,), is_batched = self._batched("RNNCell", input, (hx,))
        out = _rnn_step(self._gi(x, True), h, self.weight_hh.t(), self.nonlinearity == "relu")
        return out if is_batched else out.squeeze(0)


class LSTMCell(RNNCellBase):
    """One LSTM step; returns ``(h', c')``.

    >>> import fluxion
    >>> cell = fluxion.nn.LSTMCell(10, 20)
    >>> h, c = cell(fluxion.randn(10))  # unbatched
    >>> h.shape, c.shape
    (fluxion.Size([20]), fluxion.Size([20]))
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=4, device=device,
                         dtype=dtype)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, Tensor]:
        x, (h, c), is_batched = self._batched("LSTMCell", input,
                                              (None, None) if hx is None else tuple(hx))
        h, c = _lstm_step(self._gi(x, True), h, c, self.weight_hh.t(), None)
        return (h, c) if is_batched else (h.squeeze(0), c.squeeze(0))


class GRUCell(RNNCellBase):
    """One GRU step: ``h' = (1 - z) * n + z * h``.

    >>> import fluxion
    >>> cell = fluxion.nn.GRUCell(10, 20)
    >>> cell(fluxion.randn(3, 10), fluxion.zeros(3, 20)).shape
    fluxion.Size([3, 20])
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__(input_size, hidden_size, bias, num_chunks=3, device=device,
                         dtype=dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, (h,), is_batched = self._batched("GRUCell", input, (hx,))
        out = _gru_step(self._gi(x, False), h, self.weight_hh.t(), self.bias_hh)
        return out if is_batched else out.squeeze(0)
