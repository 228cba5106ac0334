"""What a step checks before its first kernel runs: state shapes, the group's
hyperparameters as they are now (they can be changed after construction),
grad dtypes. Where torch raises, fusedopt raises the same exception type, and a
refused step modifies nothing, in any group."""

import copy

import pytest
import torch

import fusedopt


def _snapshot(opt):
    params = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
    return params, copy.deepcopy(opt.state_dict())


def _assert_unchanged(opt, snap):
    params, sd = snap
    now = [p.detach() for g in opt.param_groups for p in g["params"]]
    for a, b in zip(now, params):
        assert torch.equal(a, b)
    after = opt.state_dict()
    assert after["state"].keys() == sd["state"].keys()
    for k, st in sd["state"].items():
        for key, v in st.items():
            assert torch.equal(torch.as_tensor(after["state"][k][key]), torch.as_tensor(v)), key


def _raises_like_torch(build, mutate, torch_cls, cls, same_type=True, **kw):
    """Both optimizers step once, then get the same mutation; the next step must
    raise in both (the same exception type unless same_type is False), and
    fusedopt's must change nothing."""
    caught = []
    for c in (torch_cls, cls):
        torch.manual_seed(0)
        params, groups = build()
        opt = c(groups, **kw)
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
        mutate(opt, params)
        snap = _snapshot(opt)
        with pytest.raises(Exception) as info:
            opt.step()
        caught.append(info)
        if c is cls:
            _assert_unchanged(opt, snap)
    if same_type:
        assert caught[1].type is caught[0].type, (caught[0].value, caught[1].value)
    return caught[1]


def _two_groups():
    first = [torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(3))]
    second = [torch.nn.Parameter(torch.randn(4, 3))]
    return first + second, [{"params": first}, {"params": second}]


ADAMS = [(torch.optim.Adam, fusedopt.Adam), (torch.optim.AdamW, fusedopt.AdamW)]


# -- 3. shapes, not only element counts -------------------------------------------------


@pytest.mark.parametrize("torch_cls,cls", ADAMS)
@pytest.mark.parametrize("key", ["exp_avg", "exp_avg_sq"])
def test_state_of_another_shape_is_refused(torch_cls, cls, key):
    def mutate(opt, params):
        opt.state[params[2]][key] = torch.zeros(3, 4)

    info = _raises_like_torch(_two_groups, mutate, torch_cls, cls, lr=0.1)
    assert "shape" in str(info.value) and key in str(info.value)


def test_momentum_buffer_of_another_shape_is_refused():
    def mutate(opt, params):
        opt.state[params[2]]["momentum_buffer"] = torch.zeros(3, 4)

    _raises_like_torch(_two_groups, mutate, torch.optim.SGD, fusedopt.SGD, lr=0.1, momentum=0.9)


def test_checkpoint_with_a_transposed_moment_is_refused():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 3))
    donor = torch.nn.Parameter(torch.randn(3, 4))
    src = torch.optim.AdamW([donor], lr=0.1)
    donor.grad = torch.randn(3, 4)
    src.step()
    opt = fusedopt.AdamW([p], lr=0.1)
    opt.load_state_dict(src.state_dict())
    p.grad = torch.randn(4, 3)
    before = p.detach().clone()
    with pytest.raises(RuntimeError, match=r"shape"):
        opt.step()
    assert torch.equal(p.detach(), before)


@pytest.mark.parametrize("torch_cls,cls", ADAMS + [(torch.optim.SGD, fusedopt.SGD)])
def test_param_data_replaced_by_another_shape_is_refused(torch_cls, cls):
    kw = dict(lr=0.1, momentum=0.9) if cls is fusedopt.SGD else dict(lr=0.1)

    def mutate(opt, params):
        params[2].data = torch.randn(3, 4)
        params[2].grad = torch.randn(3, 4)

    _raises_like_torch(_two_groups, mutate, torch_cls, cls, **kw)


# -- 4. hyperparameters changed after construction ---------------------------------------


@pytest.mark.parametrize("torch_cls,cls", ADAMS)
def test_beta1_of_one_raises_zero_division_like_torch(torch_cls, cls):
    def mutate(opt, params):
        opt.param_groups[1]["betas"] = (1.0, 0.999)

    _raises_like_torch(_two_groups, mutate, torch_cls, cls, lr=0.1)


@pytest.mark.parametrize("cls", [fusedopt.Adam, fusedopt.AdamW])
def test_beta2_of_one_is_refused_where_torch_gives_nan(cls):
    params, groups = _two_groups()
    opt = cls(groups, lr=0.1)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.param_groups[1]["betas"] = (0.9, 1.0)
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match=r"Invalid beta parameter at index 1: 1.0"):
        opt.step()
    _assert_unchanged(opt, snap)


@pytest.mark.parametrize("torch_cls,cls", ADAMS + [(torch.optim.SGD, fusedopt.SGD)])
@pytest.mark.parametrize(
    "key,value",
    [("lr", "0.1"), ("lr", torch.tensor([0.1, 0.2])), ("weight_decay", "0.1")],
    ids=["lr str", "lr 2 elements", "weight_decay str"],
)
def test_bad_hyperparameter_in_a_later_group_refuses_before_any_update(torch_cls, cls, key, value):
    def mutate(opt, params):
        opt.param_groups[1][key] = value

    # a tensor lr of 2 elements: torch fails in whichever op first meets it (a
    # TypeError in Adam, a RuntimeError in AdamW); fusedopt raises the ValueError
    # torch's constructor raises for it
    tensor = isinstance(value, torch.Tensor)
    info = _raises_like_torch(_two_groups, mutate, torch_cls, cls, same_type=not tensor, lr=0.1, weight_decay=0.1)
    assert key in str(info.value)
    if tensor:
        assert info.type is ValueError and "Tensor lr must be 1-element" in str(info.value)


def test_a_later_groups_bad_state_count_refuses_before_any_update():
    params, groups = _two_groups()
    opt = fusedopt.AdamW(groups, lr=0.1)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    opt.state[params[2]]["exp_avg"] = torch.zeros(11)
    snap = _snapshot(opt)
    with pytest.raises(RuntimeError, match="exp_avg"):
        opt.step()
    _assert_unchanged(opt, snap)


# -- 7. fused=True on meta, capturable=True on the CPU ----------------------------------------


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD"])
def test_fused_on_meta_is_refused_with_torchs_message(name):
    def run(cls):
        p = torch.nn.Parameter(torch.randn(3, device="meta"))
        p.grad = torch.randn(3, device="meta")
        with pytest.raises(Exception) as info:
            cls([p], fused=True).step()
        return info.type, str(info.value)

    assert run(getattr(fusedopt, name)) == run(getattr(torch.optim, name))


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD"])
def test_meta_params_step_as_with_torch(name):
    p = torch.nn.Parameter(torch.randn(3, device="meta"))
    p.grad = torch.randn(3, device="meta")
    opt = getattr(fusedopt, name)([p], lr=0.1)
    opt.step()
    assert p.device.type == "meta"


def test_capturable_on_the_cpu_is_accepted_and_steps_like_non_capturable():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(10))
    b = torch.nn.Parameter(a.detach().clone())
    oa = fusedopt.AdamW([a], lr=0.1, capturable=True)
    ob = torch.optim.AdamW([b], lr=0.1)
    for _ in range(3):
        g = torch.randn(10)
        a.grad, b.grad = g.clone(), g.clone()
        oa.step()
        ob.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=2e-6, atol=2e-6)


# -- 10. grads whose dtype is not the param's ---------------------------------------------------


def _with_grad(p_dtype, g_dtype, n=6):
    p = torch.nn.Parameter(torch.randn(n, dtype=p_dtype))
    if hasattr(p, "grad_dtype"):
        p.grad_dtype = g_dtype
    p.grad = torch.randn(n, dtype=g_dtype)
    return p


MISMATCHED = [
    (torch.float32, torch.bfloat16),
    (torch.float32, torch.float16),
    (torch.float32, torch.float64),
    (torch.bfloat16, torch.float16),
    (torch.float16, torch.bfloat16),
    (torch.float64, torch.float32),
]


@pytest.mark.parametrize("torch_cls,cls", ADAMS)
@pytest.mark.parametrize("p_dtype,g_dtype", MISMATCHED, ids=str)
def test_adam_refuses_grads_of_another_dtype_like_torch(torch_cls, cls, p_dtype, g_dtype):
    with pytest.raises(RuntimeError):
        torch_cls([_with_grad(p_dtype, g_dtype)]).step()
    p = _with_grad(p_dtype, g_dtype)
    before = p.detach().clone()
    with pytest.raises(RuntimeError, match="dtype"):
        cls([p]).step()
    assert torch.equal(p.detach(), before)


@pytest.mark.parametrize("p_dtype,g_dtype", MISMATCHED, ids=str)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_takes_grads_of_another_dtype_as_torch_does(p_dtype, g_dtype, momentum):
    torch.manual_seed(0)
    a = _with_grad(p_dtype, g_dtype)
    b = torch.nn.Parameter(a.detach().clone())
    if hasattr(b, "grad_dtype"):
        b.grad_dtype = g_dtype
    b.grad = a.grad.clone()
    oa = fusedopt.SGD([a], lr=0.1, momentum=momentum)
    ob = torch.optim.SGD([b], lr=0.1, momentum=momentum)
    for _ in range(3):
        oa.step()
        ob.step()
    assert torch.equal(a.detach(), b.detach())
    if momentum:
        assert oa.state[a]["momentum_buffer"].dtype == ob.state[b]["momentum_buffer"].dtype
        assert torch.equal(oa.state[a]["momentum_buffer"], ob.state[b]["momentum_buffer"])


@pytest.mark.parametrize("cls", [fusedopt.Adam, fusedopt.SGD])
def test_float32_grads_of_low_precision_params_are_the_documented_extension(cls):
    p = _with_grad(torch.bfloat16, torch.float32)
    before = p.detach().clone()
    cls([p], lr=0.1).step()
    assert not torch.equal(p.detach(), before)


@pytest.mark.parametrize("cls", [fusedopt.Adam, fusedopt.AdamW, fusedopt.SGD])
def test_lr_as_a_string_is_refused_like_torch(cls):
    p = [torch.nn.Parameter(torch.randn(3))]
    with pytest.raises(TypeError):
        getattr(torch.optim, cls.__name__)(p, lr="0.1")
    with pytest.raises(TypeError):
        cls(p, lr="0.1")
