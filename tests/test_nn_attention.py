"""MultiheadAttention, TransformerEncoderLayer and TransformerEncoder against PyTorch:
parameter names, shapes and initialisation; outputs, attention weights and the gradients of
inputs and every parameter over masks (bool / float, attention / key padding), layouts,
need_weights / average_attn_weights, kdim / vdim, bias_kv / zero attention, norm_first,
activations and eval-mode dropout."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import fluxion

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.filterwarnings("ignore:Support for mismatched"),  # both frameworks warn
    pytest.mark.filterwarnings("ignore:invalid value encountered"),  # NaN rows, on purpose
]

F32 = {"rtol": 1e-5, "atol": 1e-5}
F64 = {"rtol": 1e-10, "atol": 1e-10}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors: PyTorch's intra-op threads only add contention (and noise)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- helpers ------------------------------------------------------------------------------
def to_fx(t):
    return fluxion.tensor(t.detach().numpy())


def copy_params(fm, tm):
    fm.load_state_dict({k: to_fx(v) for k, v in tm.state_dict().items()})


def check(f, t, tol):
    assert (f is None) == (t is None), (f, t)
    if t is None:
        return
    assert tuple(f.shape) == tuple(t.shape), (tuple(f.shape), tuple(t.shape))
    assert f.dtype.name == str(t.dtype).removeprefix("torch."), (f.dtype, t.dtype)
    np.testing.assert_allclose(f.detach().numpy(), t.detach().numpy(), **tol)


def leaf_pair(rng, shape, dtype="float32"):
    a = rng.standard_normal(shape).astype(dtype)
    return fluxion.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)


def const_pair(a):
    return fluxion.tensor(a), torch.tensor(a)


def backward_both(rng, f_outs, t_outs):
    f_loss, t_loss = 0, 0
    for f, t in zip(f_outs, t_outs):
        if t is None:
            continue
        w = rng.standard_normal(tuple(t.shape)).astype(str(t.dtype).removeprefix("torch."))
        f_loss = f_loss + (f * fluxion.tensor(w)).sum()
        t_loss = t_loss + (t * torch.tensor(w)).sum()
    f_loss.backward()
    t_loss.backward()


def check_param_grads(fm, tm, tol):
    f_params = dict(fm.named_parameters())
    t_params = dict(tm.named_parameters())
    assert list(f_params) == list(t_params)
    for name, tp in t_params.items():
        if tp.grad is None:
            assert f_params[name].grad is None, name
            continue
        check(f_params[name].grad, tp.grad, tol)


def padding_mask(batch, src_len):
    """Each sequence keeps a prefix; at least one key per row stays visible."""
    kpm = np.zeros((batch, src_len), bool)
    for b in range(batch):
        kpm[b, src_len - b % src_len:] = True
    kpm[:, 0] = False
    return kpm


def make_mask(kind, rng, tgt, src, batch, heads):
    if kind is None:
        return None
    if kind == "bool2d":
        m = rng.random((tgt, src)) < 0.3
        m[:, 0] = False
        return m
    if kind == "float2d":
        return rng.standard_normal((tgt, src)).astype(np.float32)
    if kind == "bool3d":
        m = rng.random((batch * heads, tgt, src)) < 0.3
        m[..., 0] = False
        return m
    if kind == "float3d":
        return rng.standard_normal((batch * heads, tgt, src)).astype(np.float32)
    if kind == "causal":
        return np.triu(np.ones((tgt, src), bool), 1)
    raise ValueError(kind)


# --- MultiheadAttention -----------------------------------------------------------------------
def run_mha(*, embed=8, heads=2, batch_first=False, self_attn=True, tgt=4, src=5, batch=3,
            attn_mask=None, kpm=None, need_weights=True, average=True, kdim=None, vdim=None,
            bias=True, add_bias_kv=False, add_zero_attn=False, dropout=0.0, train=True,
            unbatched=False, dtype="float32", is_causal=False, seed=0):
    rng = np.random.default_rng(seed)
    kwargs = {"dropout": dropout, "bias": bias, "add_bias_kv": add_bias_kv,
              "add_zero_attn": add_zero_attn, "kdim": kdim, "vdim": vdim,
              "batch_first": batch_first}
    torch.manual_seed(seed)
    tm = torch.nn.MultiheadAttention(embed, heads, **kwargs)
    fm = fluxion.nn.MultiheadAttention(embed, heads, **kwargs)
    copy_params(fm, tm)
    if dtype == "float64":
        tm.double()
        fm.double()
    tm.train(train)
    fm.train(train)
    if self_attn:
        src = tgt

    def shape(length, dim):
        if unbatched:
            return (length, dim)
        return (batch, length, dim) if batch_first else (length, batch, dim)

    fq, tq = leaf_pair(rng, shape(tgt, embed), dtype)
    if self_attn:
        fk = fv = fq
        tk = tv = tq
        leaves = [(fq, tq)]
    else:
        fk, tk = leaf_pair(rng, shape(src, kdim or embed), dtype)
        fv, tv = leaf_pair(rng, shape(src, vdim or embed), dtype)
        leaves = [(fq, tq), (fk, tk), (fv, tv)]
    extra_f, extra_t = {}, {}
    if attn_mask is not None:
        m = make_mask(attn_mask, rng, tgt, src, 1 if unbatched else batch, heads)
        if m.dtype != bool:
            m = m.astype(dtype)
        extra_f["attn_mask"], extra_t["attn_mask"] = const_pair(m)
    if kpm is not None:
        m = padding_mask(batch, src)
        if unbatched:
            m = m[1]
        if kpm == "float":
            m = np.where(m, -np.inf, 0.0).astype(dtype)
        extra_f["key_padding_mask"], extra_t["key_padding_mask"] = const_pair(m)
    f_out, f_w = fm(fq, fk, fv, need_weights=need_weights, average_attn_weights=average,
                    is_causal=is_causal, **extra_f)
    t_out, t_w = tm(tq, tk, tv, need_weights=need_weights, average_attn_weights=average,
                    is_causal=is_causal, **extra_t)
    tol = F64 if dtype == "float64" else F32
    check(f_out, t_out, tol)
    check(f_w, t_w, tol)
    if not need_weights:
        assert f_w is None
    backward_both(rng, [f_out, f_w], [t_out, t_w])
    for f, t in leaves:
        check(f.grad, t.grad, tol)
    check_param_grads(fm, tm, tol)
    return fm, tm


MASKS = [None, "bool2d", "float2d", "bool3d", "float3d"]


@pytest.mark.parametrize(
    "batch_first,self_attn,attn_mask,kpm,need_weights",
    list(itertools.product([False, True], [True, False], MASKS, [None, "bool"],
                           [True, False])),
)
def test_mha_grid(batch_first, self_attn, attn_mask, kpm, need_weights):
    run_mha(batch_first=batch_first, self_attn=self_attn, attn_mask=attn_mask, kpm=kpm,
            need_weights=need_weights)


@pytest.mark.parametrize("average,heads", [(True, 1), (False, 2), (False, 4)])
def test_mha_per_head_weights(average, heads):
    run_mha(average=average, heads=heads, self_attn=False, attn_mask="float2d", kpm="bool")


@pytest.mark.parametrize("kpm", ["bool", "float"])
def test_mha_float_and_bool_padding_masks(kpm):
    run_mha(kpm=kpm, attn_mask="float2d" if kpm == "float" else "bool2d", self_attn=False)


@pytest.mark.parametrize("kdim,vdim,batch_first,need_weights", [
    (6, 6, False, True), (5, 7, True, True), (5, 7, False, False), (8, 3, True, False),
])
def test_mha_kdim_vdim(kdim, vdim, batch_first, need_weights):
    fm, _ = run_mha(kdim=kdim, vdim=vdim, self_attn=False, batch_first=batch_first,
                    need_weights=need_weights, kpm="bool", attn_mask="bool2d")
    assert fm.in_proj_weight is None and fm.q_proj_weight is not None


def test_mha_key_is_value_cross_attention():
    """key is value (encoder-decoder attention) takes the packed k/v projection path."""
    rng = np.random.default_rng(3)
    tm = torch.nn.MultiheadAttention(8, 2)
    fm = fluxion.nn.MultiheadAttention(8, 2)
    copy_params(fm, tm)
    fq, tq = leaf_pair(rng, (4, 2, 8))
    fkv, tkv = leaf_pair(rng, (6, 2, 8))
    f_out, f_w = fm(fq, fkv, fkv)
    t_out, t_w = tm(tq, tkv, tkv)
    check(f_out, t_out, F32)
    check(f_w, t_w, F32)
    backward_both(rng, [f_out, f_w], [t_out, t_w])
    check(fq.grad, tq.grad, F32)
    check(fkv.grad, tkv.grad, F32)
    check_param_grads(fm, tm, F32)


@pytest.mark.parametrize("need_weights,attn_mask,kpm,self_attn", [
    (True, None, None, True), (False, "bool2d", "bool", False), (True, "bool3d", None, False),
    (False, "float3d", "float", True),
])
def test_mha_unbatched(need_weights, attn_mask, kpm, self_attn):
    run_mha(unbatched=True, need_weights=need_weights, attn_mask=attn_mask, kpm=kpm,
            self_attn=self_attn)


@pytest.mark.parametrize("need_weights,kpm", [(True, None), (False, None), (False, "bool"),
                                              (True, "bool")])
def test_mha_is_causal_hint(need_weights, kpm):
    run_mha(attn_mask="causal", is_causal=True, need_weights=need_weights, kpm=kpm)


def test_mha_mismatched_mask_types_warn_like_torch():
    m = fluxion.nn.MultiheadAttention(8, 2)
    x = fluxion.randn(3, 2, 8)
    kpm = fluxion.zeros(2, 3, dtype=fluxion.bool)
    with pytest.warns(UserWarning, match="Support for mismatched key_padding_mask and attn_mask"):
        m(x, x, x, key_padding_mask=kpm, attn_mask=fluxion.zeros(3, 3))


def test_mha_is_causal_needs_mask():
    m = fluxion.nn.MultiheadAttention(8, 2)
    x = fluxion.randn(3, 2, 8)
    with pytest.raises(RuntimeError, match="Need attn_mask"):
        m(x, x, x, is_causal=True)


@pytest.mark.parametrize("bias,add_bias_kv,add_zero_attn,attn_mask,kpm", [
    (False, False, False, "bool2d", "bool"),
    (True, True, False, None, None), (True, True, False, "float2d", "bool"),
    (True, False, True, "bool3d", "bool"), (True, True, True, "bool2d", "bool"),
])
@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_bias_and_extras(bias, add_bias_kv, add_zero_attn, attn_mask, kpm, need_weights):
    run_mha(bias=bias, add_bias_kv=add_bias_kv, add_zero_attn=add_zero_attn,
            attn_mask=attn_mask, kpm=kpm, need_weights=need_weights, self_attn=False)


@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_eval_mode_with_dropout_matches(need_weights):
    run_mha(dropout=0.5, train=False, need_weights=need_weights, kpm="bool")


def test_mha_float64():
    run_mha(dtype="float64", self_attn=False, attn_mask="bool2d", kpm="bool", kdim=5, vdim=6)
    run_mha(dtype="float64", need_weights=False, attn_mask="bool3d", batch_first=True)


def test_mha_train_dropout_is_random():
    fluxion.manual_seed(0)
    m = fluxion.nn.MultiheadAttention(8, 2, dropout=0.5)
    x = fluxion.randn(4, 2, 8)
    a, _ = m(x, x, x)
    b, _ = m(x, x, x)
    assert not np.allclose(a.detach().numpy(), b.detach().numpy())
    m.eval()
    c, wc = m(x, x, x)
    d, _ = m(x, x, x)
    np.testing.assert_array_equal(c.detach().numpy(), d.detach().numpy())
    np.testing.assert_allclose(wc.detach().numpy().sum(-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_fully_masked_rows_match_torch(need_weights):
    """A query that may attend to nothing: NaN with need_weights (PyTorch's softmax path),
    zeros without (PyTorch's fused kernel)."""
    rng = np.random.default_rng(0)
    tm = torch.nn.MultiheadAttention(8, 2)
    fm = fluxion.nn.MultiheadAttention(8, 2)
    copy_params(fm, tm)
    fx, tx = leaf_pair(rng, (3, 2, 8))
    mask = np.zeros((3, 3), bool)
    mask[1] = True
    fmask, tmask = const_pair(mask)
    f_out, _ = fm(fx, fx, fx, attn_mask=fmask, need_weights=need_weights)
    t_out, _ = tm(tx, tx, tx, attn_mask=tmask, need_weights=need_weights)
    np.testing.assert_allclose(f_out.detach().numpy(), t_out.detach().numpy(), **F32)
    assert np.isnan(t_out.detach().numpy()).any() == need_weights
    if not need_weights:
        f_out.sum().backward()
        t_out.sum().backward()
        check(fx.grad, tx.grad, F32)
        check_param_grads(fm, tm, F32)


def test_mha_matches_torch_fast_path_in_inference():
    """PyTorch's fused inference path (eval, no grad, batch_first, even heads) agrees."""
    rng = np.random.default_rng(5)
    tm = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
    fm = fluxion.nn.MultiheadAttention(8, 2, batch_first=True).eval()
    copy_params(fm, tm)
    x = rng.standard_normal((2, 5, 8)).astype(np.float32)
    kpm = padding_mask(2, 5)
    with torch.no_grad():
        t_out, t_w = tm(torch.tensor(x), torch.tensor(x), torch.tensor(x),
                        key_padding_mask=torch.tensor(kpm))
    with fluxion.no_grad():
        f_out, f_w = fm(fluxion.tensor(x), fluxion.tensor(x), fluxion.tensor(x),
                        key_padding_mask=fluxion.tensor(kpm))
    check(f_out, t_out, F32)
    check(f_w, t_w, F32)


@pytest.mark.parametrize("kwargs", [
    {}, {"bias": False}, {"kdim": 5, "vdim": 3}, {"add_bias_kv": True},
    {"batch_first": True, "add_zero_attn": True},
])
def test_mha_parameter_names_shapes_repr(kwargs):
    tm = torch.nn.MultiheadAttention(8, 2, **kwargs)
    fm = fluxion.nn.MultiheadAttention(8, 2, **kwargs)
    assert [(n, tuple(p.shape)) for n, p in fm.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in tm.named_parameters()]
    assert list(fm.state_dict()) == list(tm.state_dict())
    assert repr(fm) == repr(tm)
    for attr in ("embed_dim", "kdim", "vdim", "num_heads", "head_dim", "batch_first",
                 "dropout", "add_zero_attn", "_qkv_same_embed_dim"):
        assert getattr(fm, attr) == getattr(tm, attr), attr


def test_mha_default_initialisation():
    fluxion.manual_seed(0)
    e = 64
    m = fluxion.nn.MultiheadAttention(e, 4, add_bias_kv=True)
    w = m.in_proj_weight.detach().numpy()
    bound = math.sqrt(6 / (e + 3 * e))  # xavier_uniform_ on (3E, E)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    np.testing.assert_allclose(w.std(), bound / math.sqrt(3), rtol=0.05)
    ow = m.out_proj.weight.detach().numpy()  # Linear's default: U(±1/sqrt(E))
    assert np.abs(ow).max() <= 1 / math.sqrt(e) and np.abs(ow).max() > 0.98 / math.sqrt(e)
    assert not m.in_proj_bias.detach().numpy().any()
    assert not m.out_proj.bias.detach().numpy().any()
    for b in (m.bias_k, m.bias_v):  # xavier_normal_ on (1, 1, E): std sqrt(2 / 2E)
        assert b.shape == (1, 1, e)
        np.testing.assert_allclose(b.detach().numpy().std(), math.sqrt(1 / e), rtol=0.3)
    sep = fluxion.nn.MultiheadAttention(e, 4, kdim=32, vdim=16)
    kb = math.sqrt(6 / (e + 32))
    k = sep.k_proj_weight.detach().numpy()
    assert np.abs(k).max() <= kb and np.abs(k).max() > 0.98 * kb


def test_mha_errors():
    with pytest.raises(AssertionError, match="divisible"):
        fluxion.nn.MultiheadAttention(10, 3)
    with pytest.raises(ValueError, match="greater than 0"):
        fluxion.nn.MultiheadAttention(0, 1)
    m = fluxion.nn.MultiheadAttention(8, 2)
    x = fluxion.randn(3, 2, 8)
    with pytest.raises(RuntimeError, match="The shape of the 2D attn_mask"):
        m(x, x, x, attn_mask=fluxion.zeros(2, 2))
    with pytest.raises(AssertionError, match="only bool and floating"):
        m(x, x, x, attn_mask=fluxion.zeros(3, 3, dtype=fluxion.int64))
    with pytest.raises(AssertionError, match="expected `key` and `value` to be 3-D"):
        m(x, x[0], x[0])


# --- TransformerEncoderLayer / TransformerEncoder -----------------------------------------------
def make_layer_pair(**kwargs):
    act = kwargs.pop("activation", "relu")
    if act == "module_gelu":
        t_act, f_act = torch.nn.GELU(), fluxion.nn.GELU()
    elif act == "callable":
        t_act, f_act = torch.nn.functional.silu, fluxion.nn.functional.silu
    else:
        t_act = f_act = act
    tm = torch.nn.TransformerEncoderLayer(activation=t_act, **kwargs)
    fm = fluxion.nn.TransformerEncoderLayer(activation=f_act, **kwargs)
    copy_params(fm, tm)
    return fm, tm


def run_encoder(fm, tm, *, batch_first, seq=5, batch=3, d_model=8, src_mask=None, kpm=None,
                unbatched=False, is_causal=None, train=False, dtype="float32", seed=0,
                mask_arg="src_mask"):
    rng = np.random.default_rng(seed)
    fm.train(train)
    tm.train(train)
    if dtype == "float64":
        fm.double()
        tm.double()
    if unbatched:
        shape = (seq, d_model)
    else:
        shape = (batch, seq, d_model) if batch_first else (seq, batch, d_model)
    fx, tx = leaf_pair(rng, shape, dtype)
    kf, kt = {}, {}
    if src_mask is not None:
        m = make_mask(src_mask, rng, seq, seq, batch, fm_heads(fm))
        if m.dtype != bool:
            m = m.astype(dtype)
        kf[mask_arg], kt[mask_arg] = const_pair(m)
    if kpm is not None:
        m = padding_mask(batch, seq)
        if unbatched:
            m = m[1]
        if kpm == "float":
            m = np.where(m, -np.inf, 0.0).astype(dtype)
        kf["src_key_padding_mask"], kt["src_key_padding_mask"] = const_pair(m)
    if is_causal is not None:
        kf["is_causal"] = kt["is_causal"] = is_causal
    f_out, t_out = fm(fx, **kf), tm(tx, **kt)
    tol = F64 if dtype == "float64" else F32
    check(f_out, t_out, tol)
    backward_both(rng, [f_out], [t_out])
    check(fx.grad, tx.grad, tol)
    check_param_grads(fm, tm, tol)


def fm_heads(fm):
    layer = fm.layers[0] if hasattr(fm, "layers") else fm
    return layer.self_attn.num_heads


@pytest.mark.parametrize(
    "norm_first,activation,src_mask,kpm,batch_first",
    [(nf, a, m, k, bf) for nf, a, (m, k), bf in itertools.product(
        [False, True], ["relu", "gelu"],
        [(None, None), ("causal", None), (None, "bool"), ("bool2d", "bool"),
         ("float3d", None)],
        [False, True])],
)
def test_encoder_layer_eval_grid(norm_first, activation, src_mask, kpm, batch_first):
    fm, tm = make_layer_pair(d_model=8, nhead=2, dim_feedforward=16, dropout=0.1,
                             activation=activation, norm_first=norm_first,
                             batch_first=batch_first)
    run_encoder(fm, tm, batch_first=batch_first, src_mask=src_mask, kpm=kpm)


@pytest.mark.parametrize("activation", ["module_gelu", "callable"])
def test_encoder_layer_activation_objects(activation):
    fm, tm = make_layer_pair(d_model=8, nhead=2, dim_feedforward=16, activation=activation,
                             batch_first=True)
    assert fm.activation_relu_or_gelu == tm.activation_relu_or_gelu
    assert [n for n, _ in fm.named_modules()] == [n for n, _ in tm.named_modules()]
    run_encoder(fm, tm, batch_first=True, kpm="bool")


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_train_zero_dropout(norm_first):
    fm, tm = make_layer_pair(d_model=8, nhead=4, dim_feedforward=12, dropout=0.0,
                             norm_first=norm_first)
    run_encoder(fm, tm, batch_first=False, train=True, src_mask="bool2d", kpm="bool")


@pytest.mark.parametrize("kwargs,run", [
    ({"bias": False, "layer_norm_eps": 1e-3}, {"src_mask": "float2d"}),
    ({"norm_first": True}, {"unbatched": True, "src_mask": "causal", "kpm": "bool"}),
    ({}, {"unbatched": True}),
    ({"batch_first": True}, {"src_mask": "causal", "is_causal": True}),
    ({"batch_first": True, "norm_first": True}, {"kpm": "float", "dtype": "float64"}),
])
def test_encoder_layer_options(kwargs, run):
    fm, tm = make_layer_pair(d_model=8, nhead=2, dim_feedforward=16, **kwargs)
    run_encoder(fm, tm, batch_first=kwargs.get("batch_first", False), **run)


def test_encoder_layer_train_dropout_is_applied():
    fluxion.manual_seed(0)
    layer = fluxion.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.5)
    x = fluxion.randn(4, 2, 8)
    a, b = layer(x), layer(x)
    assert not np.allclose(a.detach().numpy(), b.detach().numpy())
    layer.eval()
    np.testing.assert_array_equal(layer(x).detach().numpy(), layer(x).detach().numpy())


@pytest.mark.parametrize("norm_first,with_norm,src_mask,kpm,is_causal,batch_first", [
    (False, False, None, None, None, False),
    (False, True, "causal", None, None, True),  # causal mask detected (is_causal=None)
    (True, True, "causal", "bool", None, False),
    (True, False, "bool2d", "bool", False, True),
    (False, True, "causal", None, True, False),
])
def test_encoder_stack(norm_first, with_norm, src_mask, kpm, is_causal, batch_first):
    f_layer = fluxion.nn.TransformerEncoderLayer(8, 2, 16, norm_first=norm_first,
                                                 batch_first=batch_first)
    t_layer = torch.nn.TransformerEncoderLayer(8, 2, 16, norm_first=norm_first,
                                               batch_first=batch_first)
    fm = fluxion.nn.TransformerEncoder(f_layer, 2, fluxion.nn.LayerNorm(8) if with_norm
                                       else None)
    tm = torch.nn.TransformerEncoder(t_layer, 2, torch.nn.LayerNorm(8) if with_norm else None,
                                     enable_nested_tensor=False)
    assert list(fm.state_dict()) == list(tm.state_dict())
    with torch.no_grad():  # torch's layers differ after init; line them up
        tm.layers[1].linear1.weight.mul_(-0.5)
    copy_params(fm, tm)
    run_encoder(fm, tm, batch_first=batch_first, src_mask=src_mask, kpm=kpm,
                is_causal=is_causal, mask_arg="mask")


def test_encoder_deep_copies_layer():
    layer = fluxion.nn.TransformerEncoderLayer(8, 2, 16)
    enc = fluxion.nn.TransformerEncoder(layer, 3)
    assert len(enc.layers) == 3 and enc.num_layers == 3
    w = [m.linear1.weight for m in enc.layers]
    assert all(x is not layer.linear1.weight for x in w)
    assert len({id(x) for x in w}) == 3
    for x in w:  # copies start equal to the template
        np.testing.assert_array_equal(x.detach().numpy(), layer.linear1.weight.detach().numpy())
    with fluxion.no_grad():
        enc.layers[0].linear1.weight.mul_(2)
    np.testing.assert_array_equal(enc.layers[1].linear1.weight.detach().numpy(),
                                  layer.linear1.weight.detach().numpy())
    assert len(list(enc.parameters())) == 3 * len(list(layer.parameters()))


def test_encoder_layer_names_and_repr_match_torch():
    for kwargs in [{}, {"bias": False, "norm_first": True, "batch_first": True}]:
        fm, tm = make_layer_pair(d_model=8, nhead=2, dim_feedforward=16, **kwargs)
        assert [(n, tuple(p.shape)) for n, p in fm.named_parameters()] == \
            [(n, tuple(p.shape)) for n, p in tm.named_parameters()]
        assert repr(fm) == repr(tm)


def test_encoder_layer_bad_activation():
    with pytest.raises(RuntimeError, match="activation should be relu/gelu"):
        fluxion.nn.TransformerEncoderLayer(8, 2, activation="tanh")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_encoder_matches_torch_fast_path_in_inference():
    """PyTorch's fused inference path (eval, no grad) agrees with Fluxion's reference path;
    only its nested-tensor encoder zeroes padded positions, which Fluxion computes."""
    rng = np.random.default_rng(7)
    t_enc = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2).eval()
    f_enc = fluxion.nn.TransformerEncoder(
        fluxion.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 2).eval()
    copy_params(f_enc, t_enc)
    x = rng.standard_normal((3, 5, 8)).astype(np.float32)
    kpm = padding_mask(3, 5)
    with torch.no_grad():
        t_out = t_enc(torch.tensor(x), src_key_padding_mask=torch.tensor(kpm)).numpy()
        t_layer = t_enc.layers[0](torch.tensor(x), src_key_padding_mask=torch.tensor(kpm))
    with fluxion.no_grad():
        f_out = f_enc(fluxion.tensor(x), src_key_padding_mask=fluxion.tensor(kpm)).numpy()
        f_layer = f_enc.layers[0](fluxion.tensor(x), src_key_padding_mask=fluxion.tensor(kpm))
    np.testing.assert_allclose(f_out[~kpm], t_out[~kpm], **F32)
    assert not t_out[kpm].any() and f_out[kpm].any()  # the documented difference
    check(f_layer, t_layer, F32)
