"""The Python API: the README's example, graphs, steps, params, errors."""
import os

import numpy as np
import pytest

import stepc


def test_readme_example_runs_verbatim(tmp_path):
    g = stepc.load("examples/mlp.sg")                    # also stepc.parse(text), stepc.import_onnx(path)
    step = stepc.compile(g.train_step(loss="loss", optimizer="adam", lr=1e-3), backend="cpu")
    out = step(x=np.zeros((128, 784), np.float32), y=np.zeros(128, np.int32))   # {"loss": array(...)}
    params = step.params()                                # {"w1": array, ...}; step.set_params(...), save/load

    @stepc.jit                                            # traces on first call per shape signature
    def f(x, w):
        return stepc.relu(x @ w).sum()

    assert set(out) == {"loss"}
    assert out["loss"].dtype == np.float32 and out["loss"].shape == ()
    # Zero inputs: logits are the biases (zero), so the loss is log(10).
    assert out["loss"] == pytest.approx(np.log(10), rel=1e-5)
    assert params["w1"].shape == (784, 512) and params["step"] == 1
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    w = np.ones((3, 4), np.float32)
    assert f(x, w) == pytest.approx(np.maximum(x @ w, 0).sum())


def test_memory_budget_keeps_the_results():
    g = stepc.load("examples/cnn.sg").train_step(loss="loss", optimizer="sgd", lr=0.1)
    inputs = g.random_inputs(seed=3)
    expected = stepc.compile(g)(**inputs)["loss"]
    budgeted = stepc.compile(g, memory_budget="2.1MB")(**inputs)["loss"]
    assert budgeted == pytest.approx(expected, rel=1e-5)
    with pytest.raises(stepc.Error, match="cannot be met: the smallest planned peak"):
        stepc.compile(g, memory_budget=1000)
    with pytest.raises(stepc.Error, match="--memory-budget '150%'"):
        stepc.compile(g, memory_budget="150%")


def test_params_set_save_load(tmp_path):
    g = stepc.load("examples/xor.sg")
    step = stepc.compile(g.train_step(loss="loss", optimizer="sgd", lr=0.1), backend="cpu")
    before = step.params()
    path = tmp_path / "ckpt.safetensors"
    step.save(path)
    inputs = g.random_inputs(seed=1)
    step(**inputs)
    assert step.steps_taken == 1
    assert not all(np.array_equal(before[k], v) for k, v in step.params().items())
    step.load(path)
    for name, value in step.params().items():
        np.testing.assert_array_equal(value, before[name])
    name = next(n for n, (dtype, _) in g.params.items() if dtype == "f32")
    new = np.full(g.params[name][1], 0.5, np.float32)
    step.set_params({name: new})
    np.testing.assert_array_equal(step.param(name), new)
    with pytest.raises(stepc.Error, match=name):
        step.set_params({name: np.zeros((7, 7), np.float32)})


@pytest.mark.parametrize("backend", ["interp", "cpu"])
def test_backends_agree_with_the_interpreter(backend):
    g = stepc.load("examples/mlp.sg").train_step(loss="loss", optimizer="adamw", lr=1e-3)
    inputs = g.random_inputs(seed=3)
    reference = stepc.compile(g, backend="interp")
    step = stepc.compile(g, backend=backend)
    for _ in range(2):
        want, got = reference(**inputs), step(**inputs)
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-4)
    np.testing.assert_allclose(step.param("w3"), reference.param("w3"), rtol=1e-4, atol=1e-6)


def test_cuda_backend_runs_or_says_why():
    g = stepc.load("examples/xor.sg")
    if stepc._stepc.cuda_unavailable_reason():
        with pytest.raises(stepc.Error, match="CUDA"):
            stepc.compile(g, backend="cuda")
        return
    step = stepc.compile(g, backend="cuda")
    inputs = g.random_inputs(seed=0)
    np.testing.assert_allclose(step(**inputs)["loss"],
                               stepc.compile(g, backend="interp")(**inputs)["loss"], rtol=1e-4)


def test_unknown_backend_is_an_error():
    with pytest.raises(stepc.Error, match="unknown backend 'tpu'"):
        stepc.compile(stepc.load("examples/xor.sg"), backend="tpu")


def builder_mlp():
    b = stepc.GraphBuilder("tiny")
    x = b.input("x", np.float32, (8, 4))
    y = b.input("y", "i32", (8,))
    w = b.param("w", "f32", (4, 3), stepc.Init.he_uniform(seed=1))
    bias = b.param("b", "f32", (3,), "zeros")
    h = stepc.gelu(x @ w + bias)
    logits = 2 * h - 0.5 / (1 + stepc.square(h))
    b.output("loss", stepc.cross_entropy(logits, y))
    b.output("probs", stepc.softmax(logits))
    return b.finish()


def test_builder_operators_and_composites_match_numpy():
    g = builder_mlp()
    assert g.inputs == {"x": ("f32", (8, 4)), "y": ("i32", (8,))}
    assert set(g.outputs) == {"loss", "probs"}
    inputs = g.random_inputs(seed=2)
    out = stepc.compile(g, backend="cpu")(**inputs)
    w = g.initial_params()["w"]
    z = inputs["x"] @ w
    h = 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3)))
    logits = 2 * h - 0.5 / (1 + h * h)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = e / e.sum(axis=1, keepdims=True)
    loss = -np.log(probs[np.arange(8), inputs["y"]]).mean()
    np.testing.assert_allclose(out["probs"], probs, rtol=1e-4, atol=1e-6)
    assert out["loss"] == pytest.approx(loss, rel=1e-4)


def test_more_builder_ops():
    b = stepc.GraphBuilder("ops")
    x = b.input("x", "f32", (2, 3, 4, 4))
    k = b.param("k", "f32", (5, 3, 3, 3), stepc.Init.normal(0, 0.1, seed=4))
    c = stepc.conv2d(x, k, padding=(1, 1))
    p = stepc.max_pool2d(stepc.relu(c))
    flat = p.reshape(2, 20)
    gamma = b.param("gamma", "f32", (20,), "ones")
    beta = b.param("beta", "f32", (20,), "zeros")
    n = stepc.layer_norm(flat, gamma, beta)
    t = stepc.concat([n, stepc.slice(n, [0, 0], [2, 4])], axis=1)
    b.output("y", stepc.mean(t, axis=1))
    b.output("t", t.T)
    g = b.finish()
    out = stepc.compile(g, backend="cpu")(**g.random_inputs(seed=5))
    ref = stepc.compile(g, backend="interp")(**g.random_inputs(seed=5))
    assert out["y"].shape == (2,) and out["t"].shape == (24, 2)
    np.testing.assert_allclose(out["y"], ref["y"], rtol=1e-4, atol=1e-5)


def test_reduction_axes_mean_what_they_mean_in_sg():
    b = stepc.GraphBuilder("axes")
    x = b.input("x", "f32", (3, 4))
    b.output("every", x.sum())             # no axis given: all axes
    b.output("none", stepc.sum(x, axis=[]))  # an empty list: no axes, as {axes=[]} in .sg
    b.output("last", stepc.max(x, axis=-1))
    g = b.finish()
    inputs = g.random_inputs(seed=7)
    out = stepc.compile(g, backend="cpu")(**inputs)
    assert out["every"].shape == () and out["every"] == pytest.approx(inputs["x"].sum(), rel=1e-5)
    np.testing.assert_array_equal(out["none"], inputs["x"])
    np.testing.assert_array_equal(out["last"], inputs["x"].max(axis=-1))


def test_grad_of_a_graph_and_of_values():
    g = builder_mlp()
    gg = stepc.grad(g, "loss", wrt=["w"])
    assert "grad_w" in gg.outputs
    inputs = g.random_inputs(seed=2)
    dw = stepc.compile(gg, backend="interp")(**inputs)["grad_w"]

    b = stepc.GraphBuilder("g")
    x = b.input("x", "f64", (3,))
    y = stepc.sum(stepc.sin(x) * x)
    (dx,) = stepc.grad(y, [x])
    b.output("dx", dx)
    v = np.array([0.1, 0.5, 2.0])
    got = stepc.compile(b.finish(), backend="interp")(x=v)["dx"]
    np.testing.assert_allclose(got, np.cos(v) * v + np.sin(v), rtol=1e-12)

    # Central differences of the loss against the graph gradient.
    w0 = g.initial_params()["w"]
    step = stepc.compile(g, backend="interp")
    eps = 1e-2
    step.set_params(w=(w0 + eps * (np.arange(12).reshape(4, 3) == 5)).astype(np.float32))
    up = step(**inputs)["loss"]
    step.set_params(w=(w0 - eps * (np.arange(12).reshape(4, 3) == 5)).astype(np.float32))
    down = step(**inputs)["loss"]
    assert dw.reshape(-1)[5] == pytest.approx((up - down) / (2 * eps), rel=2e-2, abs=1e-4)


@pytest.mark.parametrize("optimizer", stepc.OPTIMIZERS)
def test_every_optimizer_lowers_the_loss(optimizer):
    g = builder_mlp()
    lr = {"sgd": 0.5, "momentum": 0.1, "nesterov": 0.1}.get(optimizer, 0.02)
    step = stepc.compile(g.train_step("loss", optimizer, lr=lr, clip_norm=10.0), backend="cpu")
    inputs = g.random_inputs(seed=2)
    first = step(**inputs)["loss"]
    for _ in range(20):
        last = step(**inputs)["loss"]
    assert last < first


def test_unknown_optimizer_schedule_and_initializer_name_the_choices():
    assert stepc.SCHEDULES == ("constant", "step", "exponential", "cosine")
    g = stepc.load("examples/xor.sg")
    with pytest.raises(stepc.Error, match="unknown schedule 'linear'; expected one of: "
                                          "constant, step, exponential, cosine"):
        g.train_step("loss", stepc.Optimizer("sgd", lr=0.1, schedule="linear"))
    with pytest.raises(stepc.Error, match="unknown optimizer 'adamx'; expected one of: "
                                          + ", ".join(stepc.OPTIMIZERS)):
        g.train_step("loss", "adamx", lr=1)
    with pytest.raises(stepc.Error, match="unknown initializer 'glorot'; expected one of: "
                                          "zeros, ones, constant"):
        stepc.GraphBuilder("g").param("w", "f32", (2,), "glorot")


@pytest.mark.parametrize("schedule", [stepc.Schedule("constant"),
                                      stepc.Schedule("step", step_size=2, gamma=0.5),
                                      stepc.Schedule("exponential", gamma=0.9),
                                      stepc.Schedule("cosine", total_steps=4, min_lr=0.001)])
def test_every_schedule(schedule):
    # SGD on loss = sum(w): each step moves w by exactly -lr_t.
    b = stepc.GraphBuilder("s")
    w = b.param("w", "f32", (1,), "zeros")
    b.output("loss", stepc.sum(w))
    opt = stepc.Optimizer("sgd", lr=0.1, schedule=schedule)
    step = stepc.compile(b.finish().train_step("loss", opt), backend="interp")
    moves, previous = [], 0.0
    for _ in range(4):
        step()
        moves.append(previous - float(step.param("w")[0]))
        previous = float(step.param("w")[0])
    t = np.arange(4)
    want = {"constant": 0.1 * np.ones(4), "step": 0.1 * 0.5 ** (t // 2),
            "exponential": 0.1 * 0.9 ** t,
            "cosine": 0.001 + (0.1 - 0.001) * (1 + np.cos(np.pi * t / 4)) / 2}[schedule.kind]
    np.testing.assert_allclose(moves, want, rtol=1e-4)


def test_learning_rate_as_an_input():
    g = builder_mlp().train_step("loss", "adam")
    assert g.inputs["lr"] == ("f32", ())
    step = stepc.compile(g, backend="cpu")
    step(lr=1e-3, **builder_mlp().random_inputs(seed=2))


def test_jit_traces_once_per_shape_signature(capsys):
    calls = []

    @stepc.jit
    def f(x, w):
        calls.append(x.shape)
        return {"y": stepc.tanh(x @ w), "n": stepc.sum(x * x)}

    w = np.ones((3, 2), np.float32)
    for batch in (4, 4, 5, 4):
        out = f(np.ones((batch, 3), np.float32), w)
        assert out["y"].shape == (batch, 2)
    assert calls == [(4, 3), (5, 3)] and f.traces == 2
    assert "stepc.jit: recompiling f for f32[5,3], f32[3,2] (was f32[4,3], f32[3,2])" in \
        capsys.readouterr().err

    @stepc.jit(backend="interp")
    def pair(a):
        return a * 2.0, stepc.max(a)

    doubled, largest = pair(np.array([1.0, 3.0], np.float32))
    np.testing.assert_array_equal(doubled, [2, 6])
    assert largest == 3


def test_jit_params_carry_across_shape_signatures(capsys):
    @stepc.jit
    def running_total(b, x):
        total = b.param("total", "f32", ())
        b.update(total, total + stepc.sum(x))
        return total

    running_total.set_params(total=np.float32(1))  # before the first call: kept for it
    for size, after in ((2, 3), (3, 6), (2, 8), (5, 13)):
        assert running_total(np.ones(size, np.float32)) == after
    assert running_total.traces == 3 and running_total.params()["total"] == 13
    capsys.readouterr()


def test_jit_train_step_keeps_weights_and_optimizer_state_across_batch_sizes(tmp_path):
    rng = np.random.default_rng(7)
    true_w = np.array([[1.0], [-2.0], [0.5]], np.float32)

    @stepc.jit(optimizer=stepc.Optimizer("adam", lr=0.05))
    def fit(b, x, y):
        w = b.param("w", "f32", (3, 1))
        return stepc.mse(x @ w, y)

    losses = []
    for batch in (32, 32, 17) * 60:  # a smaller last batch each "epoch"
        x = rng.normal(size=(batch, 3)).astype(np.float32)
        losses.append(float(fit(x, x @ true_w)))
    assert fit.traces == 2
    # One set of weights and Adam moments trained by both signatures: a
    # reset on each switch would never get near true_w.
    np.testing.assert_allclose(fit.param("w"), true_w, atol=0.05)
    assert losses[-1] < 1e-2 * losses[0]
    fit.save(tmp_path / "fit.safetensors")
    fit.set_params(w=np.zeros((3, 1), np.float32))
    fit.load(tmp_path / "fit.safetensors")
    np.testing.assert_allclose(fit.param("w"), true_w, atol=0.05)


def test_jit_errors():
    @stepc.jit(optimizer="sgd")
    def no_lr(b, x):
        return stepc.sum(x * b.param("w", "f32", (2,)))

    with pytest.raises(stepc.Error, match="needs a learning rate"):
        no_lr(np.ones(2, np.float32))
    with pytest.raises(stepc.Error, match="before its first call"):
        no_lr.save("never.safetensors")

    @stepc.jit(optimizer="sgd", lr=0.1)
    def two(x):
        return x * 2.0, stepc.sum(x)

    with pytest.raises(stepc.Error, match="must return its loss"):
        two(np.ones(2, np.float32))


class DLPackOnly:
    """An array that only speaks DLPack (as a PyTorch or JAX array does)."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_dlpack_in_and_zero_copy_out():
    g = builder_mlp()
    inputs = g.random_inputs(seed=2)
    step = stepc.compile(g, backend="cpu")
    want = step(**inputs)["probs"]
    got = step(x=DLPackOnly(inputs["x"]), y=DLPackOnly(inputs["y"]))["probs"]
    np.testing.assert_array_equal(got, want)
    # Outputs own their memory through a capsule (no copy) and export DLPack.
    assert got.base is not None
    assert np.shares_memory(np.from_dlpack(got), got)


def test_torch_tensors_pass_through_dlpack():
    torch = pytest.importorskip("torch")
    g = builder_mlp()
    inputs = g.random_inputs(seed=2)
    step = stepc.compile(g, backend="cpu")
    want = step(**inputs)["probs"]
    x, y = torch.from_numpy(inputs["x"]), torch.from_numpy(inputs["y"])
    got = step(x=x, y=y)["probs"]
    np.testing.assert_array_equal(got, want)
    # Out without a copy: outputs and params.
    assert torch.from_dlpack(got).data_ptr() == got.ctypes.data
    w = step.param("w")
    assert torch.from_dlpack(w).data_ptr() == w.ctypes.data
    # In: the DLPack view the module (and stepc.jit) reads is the tensor's memory.
    assert np.from_dlpack(x).ctypes.data == x.data_ptr()
    step.set_params(w=torch.zeros(w.shape))
    assert not step.param("w").any()
    # A non-contiguous tensor (a transpose) and the jit take torch tensors too.
    np.testing.assert_array_equal(
        step(x=torch.from_numpy(np.ascontiguousarray(inputs["x"].T)).T, y=y)["probs"],
        step(x=x, y=y)["probs"])

    @stepc.jit
    def f(a, b):
        return stepc.relu(a @ b)

    a, b = torch.randn(4, 3), torch.randn(3, 2)
    np.testing.assert_allclose(f(a, b), torch.relu(a @ b).numpy(), rtol=1e-6)


def test_errors_carry_message_and_location(tmp_path):
    b = stepc.GraphBuilder("bad")
    x = b.input("x", "f32", (128, 784))
    w = b.param("w", "f32", (512, 10))
    with pytest.raises(stepc.Error) as caught:
        x @ w  # this line is in the message
    e = caught.value
    assert e.file == __file__ and e.line is not None
    assert "inner dimensions differ: [128,784] x [512,10]" in e.message
    with open(__file__) as f:
        assert "x @ w  # this line" in f.read().splitlines()[e.line - 1]

    with pytest.raises(stepc.Error) as caught:
        stepc.parse("graph g {\n  input %x : f32[2]\n  %y = relu(%z)\n  output y = %y\n}\n", "g.sg")
    assert caught.value.location is not None and caught.value.location.startswith("g.sg:3:")

    with pytest.raises(stepc.Error, match="nope.sg"):
        stepc.load(tmp_path / "nope.sg")
    step = stepc.compile(stepc.load("examples/xor.sg"), backend="cpu")
    with pytest.raises(stepc.Error, match="x"):
        step(x=np.zeros((3, 3), np.float32))
    with pytest.raises(stepc.Error, match="unknown optimizer|adamx"):
        stepc.load("examples/xor.sg").train_step("loss", "adamx", lr=1)


def test_import_onnx(tmp_path):
    model = "/usr/share/libonnx-testdata/data/pytorch-converted/test_Linear/model.onnx"
    if not os.path.exists(model):
        pytest.skip("libonnx-testdata is not installed")
    g = stepc.import_onnx(model)
    assert g.param_values, "the weights come along"
    step = stepc.compile(g, backend="cpu")
    for name, value in g.param_values.items():
        np.testing.assert_array_equal(step.param(name), value)
    assert stepc.load(model).inputs == g.inputs


def test_bench_returns_the_figures():
    g = stepc.load("examples/xor.sg")
    figures = stepc.bench(g, compare_unfused=True, per_kernel=True, steps=3, warmup=1)
    assert figures["fused_ms_per_step"] > 0 and figures["unfused_ms_per_step"] > 0
    assert figures["kernels_fused"] <= figures["kernels_unfused"]
    assert isinstance(figures["per_kernel"], list)


@pytest.mark.parametrize("backend", ["interp", "cpu"])
def test_builder_constants_iota_and_updates(backend):
    b = stepc.GraphBuilder("counter")
    c = b.param("c", "f32", (2,), "zeros")
    b.update(c, c + b.constant([1.0, 2.0], dtype="f32"))
    b.output("seen", c + b.constant(10.0))
    b.output("i", b.iota("i32", (3,), 0))
    step = stepc.compile(b.finish(), backend=backend)
    first = step()
    second = step()
    np.testing.assert_array_equal(first["seen"], [10, 10])
    np.testing.assert_array_equal(second["seen"], [11, 12])
    np.testing.assert_array_equal(second["i"], [0, 1, 2])
    np.testing.assert_array_equal(step.param("c"), [2, 4])
    assert step.steps_taken == 2


def test_mixed_precision_train_step():
    g = stepc.load("examples/mlp.sg")
    x = np.random.default_rng(5).uniform(0, 1, (128, 784)).astype(np.float32)
    y = (np.arange(128) % 10).astype(np.int32)
    losses = {}
    for precision in [None, "bf16", "f16"]:
        step = stepc.compile(g.train_step("loss", "adam", lr=1e-3, mixed_precision=precision),
                             backend="cpu")
        losses[precision] = [float(step(x=x, y=y)["loss"]) for _ in range(3)]
        params = step.params()
        assert params["w1"].dtype == np.float32 and params["w1.m"].dtype == np.float32
        assert ("loss_scale" in params) == (precision == "f16")
    # bf16 rounds activations to 2^-9 of themselves; the losses stay within 1%.
    for precision in ["bf16", "f16"]:
        assert losses[precision] == pytest.approx(losses[None], rel=1e-2)
    with pytest.raises(stepc.Error, match="mixed_precision: unknown precision 'f8'; expected bf16 or f16"):
        g.train_step("loss", "adam", lr=1e-3, mixed_precision="f8")


@pytest.mark.parametrize("backend", ["interp", "cpu"])
def test_bf16_arrays_in_and_out(backend):
    """NumPy has no bfloat16: bf16 arrays are ml_dtypes' (inputs, outputs,
    params), and PyTorch's bfloat16 tensors pass by DLPack."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = np.dtype(ml_dtypes.bfloat16)
    b = stepc.GraphBuilder("bf16")
    x = b.input("x", "bf16", (5, 7))
    w = b.param("w", ml_dtypes.bfloat16, (7, 3), stepc.Init.normal(seed=4))
    b.output("y", stepc.relu(x @ w) + 0.5)
    b.output("wide", (x * 3).astype("f32"))
    g = b.finish()
    assert g.inputs["x"] == ("bf16", (5, 7)) and g.params["w"][0] == "bf16"
    step = stepc.compile(g, backend=backend)
    rng = np.random.default_rng(17)
    xs = rng.uniform(-2, 2, (5, 7)).astype(bf16)
    ws = rng.uniform(-1, 1, (7, 3)).astype(bf16)
    step.set_params(w=ws)
    assert step.param("w").dtype == bf16
    np.testing.assert_array_equal(step.param("w").view(np.uint16), ws.view(np.uint16))
    out = step(x=xs)
    assert out["y"].dtype == bf16 and out["y"].shape == (5, 3)
    want = np.maximum(xs.astype(np.float32) @ ws.astype(np.float32), 0) + 0.5
    np.testing.assert_allclose(out["y"].astype(np.float32), want, rtol=2**-7, atol=2**-7)
    # A fused kernel rounds a half chain once, at its store (docs/design.md).
    np.testing.assert_allclose(out["wide"], xs.astype(np.float32) * 3, rtol=2**-8)
    # A list and a non-contiguous view reach the same bits as the array.
    listed = step(x=xs.astype(np.float32).tolist())
    np.testing.assert_array_equal(listed["y"].view(np.uint16), out["y"].view(np.uint16))
    strided = np.asfortranarray(xs)
    np.testing.assert_array_equal(step(x=strided)["y"].view(np.uint16), out["y"].view(np.uint16))
    with pytest.raises(stepc.Error, match="'x'.*f32"):
        step(x=xs.astype(np.float32))


def test_bf16_torch_tensors_pass_through_dlpack():
    torch = pytest.importorskip("torch")
    pytest.importorskip("ml_dtypes")
    b = stepc.GraphBuilder("bf16_torch")
    x = b.input("x", "bf16", (4,))
    b.output("y", x * 2)
    step = stepc.compile(b.finish(), backend="cpu")
    t = torch.tensor([1.5, -2.25, 3.0, 0.1], dtype=torch.bfloat16)
    got = step(x=t)["y"].astype(np.float32)
    np.testing.assert_array_equal(got, (t * 2).float().numpy())

    @stepc.jit
    def doubled(x):
        return x * 2

    np.testing.assert_array_equal(doubled(t).astype(np.float32), (t * 2).float().numpy())


def test_bf16_without_ml_dtypes_says_what_to_install(monkeypatch):
    b = stepc.GraphBuilder("bf16_out")
    b.output("y", b.constant(1.5, dtype="bf16", shape=(2,)))
    step = stepc.compile(b.finish(), backend="interp")
    monkeypatch.setitem(__import__("sys").modules, "ml_dtypes", None)  # import fails
    with pytest.raises(stepc.Error, match="bf16 arrays need the ml_dtypes package"):
        step()
    b = stepc.GraphBuilder("bf16_in")
    b.output("y", b.input("x", "bf16", (2,)) * 2)
    with pytest.raises(stepc.Error, match="bf16 arrays need the ml_dtypes package"):
        stepc.compile(b.finish(), backend="interp")(x=[1.0, 2.0])


def test_graph_save_writes_the_text_atomically(tmp_path):
    g = stepc.load("examples/mlp.sg")
    g.save(tmp_path / "mlp.sg")
    assert stepc.load(tmp_path / "mlp.sg").text == g.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.sg"]  # no temporary left
    with pytest.raises(stepc.Error, match="missing"):
        g.save(tmp_path / "missing" / "mlp.sg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.sg"]
