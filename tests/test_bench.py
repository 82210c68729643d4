"""The benchmark's NumPy baseline agrees with jaxprop; the benchmark runs end to end (--quick).

No speed is asserted here: timings live in benchmarks/ and benchmarks/README.md.
"""

import ast
import dataclasses
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprop as jp
from jaxprop.bench import RECORD_KEYS, WORKLOADS, Bench, Config, compare, report
from jaxprop.bench import numpy_baseline as nb
from jaxprop.bench.flops import mlp_flops, step_flops
from jaxprop.bench.harness import Entry, Harness
from jaxprop.bench.timing import Worker, quiet
from jaxprop.bench.workloads import mlp_cell
from jaxprop.cli import main
from jaxprop.train.compile import forward_flops
from layer_checks import product_flops

CASES = [  # (sizes, hidden activation, output activation, loss)
    ([2, 4, 1], "sigmoid", "sigmoid", "sse_half"),
    ([3, 5, 2], "tanh", "identity", "mse"),
    ([4, 6, 5, 3], "relu", "identity", "softmax_cross_entropy"),
    ([5, 7, 6, 4, 2], "tanh", "sigmoid", "mse"),
    ([3, 8, 3], "relu", "tanh", "sse_half"),
    ([6, 3], "relu", "identity", "softmax_cross_entropy"),  # no hidden layer
]


def _data(sizes, loss, batch=7):
    rng = np.random.default_rng(sum(sizes))
    x = rng.standard_normal((batch, sizes[0]))
    if loss == "softmax_cross_entropy":
        t = rng.dirichlet(np.ones(sizes[-1]), batch)  # soft targets exercise sum(t) != 1 paths
    else:
        t = rng.standard_normal((batch, sizes[-1]))
    return x, t


@pytest.mark.long
@pytest.mark.x64
@pytest.mark.parametrize("sizes,act,out,loss", CASES)
def test_numpy_gradients_equal_jaxprop_float64(sizes, act, out, loss):
    model = jp.mlp(sizes, act, out, dtype=jnp.float64)
    params = model.init(jax.random.key(len(sizes)))
    x, t = _data(sizes, loss)
    value, grads = jp.value_and_grad(model, loss, params, x, t)
    net = nb.NumpyMLP(sizes, act, out, loss)
    np_value, np_grads = net.loss_and_grad(nb.from_jaxprop(params), x, t)
    np.testing.assert_allclose(np_value, value, rtol=1e-10, atol=1e-12)
    for (dW, db), g in zip(np_grads, [g for g in grads if g], strict=True):
        np.testing.assert_allclose(dW, g["W"], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(db, g["b"], rtol=1e-10, atol=1e-12)


@pytest.mark.x64
def test_numpy_training_loop_equals_jaxprop_gradient_descent():
    model = jp.mlp([2, 4, 1], "sigmoid", "sigmoid", init="normal", dtype=jnp.float64)
    params = model.init(jax.random.key(0))
    x, t = nb.XOR_X, nb.XOR_T
    for _ in range(25):
        _, grads = jp.value_and_grad(model, "sse_half", params, x, t)
        params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    net = nb.NumpyMLP([2, 4, 1], "sigmoid", "sigmoid", "sse_half")
    start = nb.from_jaxprop(model.init(jax.random.key(0)))
    trained, _ = net.train(start, x, t, lr=0.1, epochs=25)
    for (W, b), p in zip(trained, [p for p in params if p], strict=True):
        np.testing.assert_allclose(W, p["W"], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b, p["b"], rtol=1e-10, atol=1e-12)
    assert not np.shares_memory(trained[0][0], start[0][0])  # the inputs are left alone


def test_numpy_baseline_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        nb.NumpyMLP([2, 2], "relu", "swish")
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        nb.NumpyMLP([2, 2], loss="hinge")


@pytest.mark.long
def test_quick_benchmark_writes_every_output(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main([
        "bench", "--quick", "--workloads", "mlp,width-sweep,batch-sweep",
        "--impls", "numpy,jaxprop,jax.grad", "--dtypes", "float32", "--repeats", "2",
        "--json", str(out), "--markdown", str(tmp_path / "bench.md"),
        "--plots", str(tmp_path / "plots"),
    ])
    assert rc == 0
    data = json.loads(out.read_text())
    for key in ("device", "jax_version", "cpu_model", "gpu_model", "date", "command",
                "isolation"):
        assert key in data["header"]
    records = data["records"]
    assert records and all(tuple(r) == RECORD_KEYS for r in records)
    seen = {(r["workload"], r["impl"]) for r in records}
    for workload in ("mlp-grad", "mlp-adam", "width-sweep", "batch-sweep"):
        assert (workload, "jaxprop") in seen and (workload, "jax.grad") in seen
    assert ("mlp-grad", "numpy") in seen and ("roofline", "matmul") in seen
    assert all(r["median_s"] > 0 and r["min_s"] <= r["median_s"] <= r["max_s"] for r in records)
    hand = [r for r in records if r["impl"] == "jaxprop"]
    assert all(r["compile_s"] > 0 and r["vs_jax_grad"] > 0 for r in hand)  # the columns
    assert all(r["vs_numpy"] > 0 for r in hand if r["workload"] != "mlp-adam")
    text = (tmp_path / "bench.md").read_text()
    assert "| impl |" in text and "vs NumPy" in text and "not measurements" in text
    assert max(len(line) for line in text.splitlines() if line.startswith("|")) <= 80
    assert (tmp_path / "plots" / "batch_sweep.png").stat().st_size > 0
    assert (tmp_path / "plots" / "width_sweep.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "jaxprop bench" in printed and "smoke test" in printed
    assert data["targets"] == []  # --quick judges no target


@pytest.mark.long
def test_each_library_is_timed_in_its_own_process():
    """The method, not a timing: NumPy runs in a worker process, JAX here; every sample is a
    block of calls in alternating rounds; the shared mode (the old method) is still there."""
    config = Config(impls=("numpy", "jaxprop"), dtypes=("float32",), repeats=2).quick()
    assert Config().isolation == "process"
    with Bench(config) as bench:
        mlp_cell(bench, "mlp-grad", (8, 16, 4), 4, "float32")
        numpy_runner = bench.library("numpy")
        assert isinstance(numpy_runner, Worker) and numpy_runner.pid != os.getpid()
    process = {r["impl"]: r["process"] for r in bench.records}
    assert process == {"numpy": "worker", "jaxprop": "this", "matmul": "this"}
    assert numpy_runner.proc.poll() is not None  # closed with the bench
    assert quiet(timeout=1.0) < 1.0  # this process goes idle between samples
    with Bench(dataclasses.replace(config, isolation="shared")) as bench:
        mlp_cell(bench, "mlp-grad", (8, 16, 4), 4, "float32")
    assert {r["process"] for r in bench.records} == {"shared"}


def test_roofline_is_the_best_square_matmul_and_tiny_steps_show_n_a():
    config = dataclasses.replace(Config(impls=("jaxprop",), dtypes=("float32",), repeats=1,
                                        fresh=0).quick(), xor_epochs=20, roofline_sizes=(256,))
    with Bench(config) as bench:
        WORKLOADS["xor"](bench)
        mlp_cell(bench, "mlp-grad", (256, 256, 10), 64, "float32")  # 1.8e7 FLOPs a step
    roof = [r for r in bench.records if r["workload"] == "roofline"]
    assert roof and 0 < max(r["roofline_ratio"] for r in roof) <= 1.0 + 1e-9  # vs its best
    xor_row = next(r for r in bench.records if r["workload"] == "xor")
    assert xor_row["variant"] == "jp.fit" and xor_row["roofline_ratio"] is None
    assert report._cells(xor_row)[[k for _, k, _ in report.COLUMNS].index("roofline_ratio")] \
        == "n/a"
    grad = next(r for r in bench.records if r["workload"] == "mlp-grad")
    assert grad["roofline_ratio"] is not None


@pytest.mark.long
def test_custom_mlp_from_the_command_line(tmp_path):
    out = tmp_path / "custom.json"
    assert main(["bench", "--sizes", "1,32,32,1", "--activation", "tanh", "--loss", "mse",
                 "--batch", "64", "--quick", "--impls", "numpy,jaxprop,jax.grad",
                 "--dtypes", "float32", "--json", str(out)]) == 0
    records = json.loads(out.read_text())["records"]
    cells = {(r["workload"], r["impl"]) for r in records}
    assert {("custom", "numpy"), ("custom", "jaxprop"), ("custom", "jax.grad")} <= cells
    assert all(r["batch"] == 64 for r in records if r["workload"] == "custom")


@pytest.mark.long
def test_your_own_model_from_python():
    model = jp.serial(jp.Dense(16), jp.Tanh(), jp.Dense(3), in_shape=(5,))
    x = np.random.default_rng(0).normal(size=(32, 5)).astype(np.float32)
    t = np.eye(3, dtype=np.float32)[np.arange(32) % 3]
    records = compare(model, "softmax_cross_entropy", x, t, repeats=2, warmup=1)
    mine = {r["impl"]: r for r in records if r["workload"] == "your model"}
    assert set(mine) == {"jaxprop", "jax.grad"} and mine["jaxprop"]["vs_jax_grad"] > 0
    # GFLOP/s from the one traced count (not 6 x batch x params, which misses convolutions)
    params, state = model.init_with_state(jax.random.key(0))
    traced = step_flops(model, params, state, x)
    assert all(r["gflops"] * r["median_s"] * 1e9 == pytest.approx(traced)
               for r in mine.values())


def test_compare_counts_a_cnn_by_its_traced_program():
    """A digits-sized CNN: 6 x batch x params counted a third of its FLOPs (it reported 19
    GFLOP/s while doing ~59); the traced count gets every convolution's positions."""
    model = jp.parse_model("conv(16,3)-relu-maxpool(2)-conv(32,3)-relu-flatten-dense(64)-relu"
                           "-dense(10)", (8, 8, 1))
    params, state = model.init_with_state(jax.random.key(0))
    x = np.zeros((64, 8, 8, 1), np.float32)
    n_params = sum(np.size(p) for p in jax.tree.leaves(params))
    products = product_flops(model, params, state, jax.ShapeDtypeStruct((1, 8, 8, 1), x.dtype))
    assert step_flops(model, params, state, x) >= 3 * 64 * products > 2.5 * 6 * 64 * n_params


def test_mlp_flops_are_the_traced_products_less_the_data_gradient():
    """The MLP rows keep the closed form mlp_flops: the traced forward pass's products (exact
    for matmuls) x3, less the first layer's input gradient 2bW1 that no implementation
    computes, elementwise work left out; the traced count (the CNN rows', compare's) is that
    plus 2bW1 and 3x the forward's elementwise work."""
    sizes, batch = Config().mlp_sizes, 512
    model = jp.mlp(list(sizes), "relu", "identity")
    params, state = model.init_with_state(jax.random.key(0))
    x_one = jax.ShapeDtypeStruct((1, sizes[0]), jnp.float32)
    w1 = sizes[0] * sizes[1]
    products = product_flops(model, params, state, x_one)
    assert products == 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    assert mlp_flops(sizes, batch) == batch * (3 * products - 2 * w1)
    elementwise = forward_flops(model, params, state, x_one) - products
    assert 0 < elementwise < 0.01 * products
    traced = step_flops(model, params, state, np.zeros((batch, sizes[0]), np.float32))
    assert traced == pytest.approx(mlp_flops(sizes, batch) + batch * (2 * w1 + 3 * elementwise))


@pytest.mark.parametrize("flag", ["--json", "--markdown"])
def test_output_paths_are_checked_before_the_benchmark_runs(tmp_path, capsys, flag):
    assert main(["bench", flag, str(tmp_path / "no" / "such" / "out")]) == 2
    captured = capsys.readouterr()
    assert "does not exist" in captured.err and "roofline" not in captured.out
    assert main(["bench", flag, str(tmp_path)]) == 2  # a folder, not a file
    (tmp_path / "file").write_text("")
    assert main(["bench", "--plots", str(tmp_path / "file")]) == 2
    assert "not a folder" in capsys.readouterr().err


@pytest.mark.long
def test_bfloat16_cells_run():
    config = Config(impls=("numpy", "jaxprop", "jax.grad"), repeats=1, warmup=1).quick()
    with Bench(config) as bench:
        mlp_cell(bench, "mlp-grad", (8, 16, 4), 4, "bfloat16")
    impls = {r["impl"] for r in bench.records}
    assert impls == {"jaxprop", "jax.grad", "matmul"}  # NumPy has no bfloat16
    assert all(r["dtype"] == "bfloat16" and r["gflops"] > 0 for r in bench.records)


@pytest.mark.parametrize("argv,message", [
    (["--workloads", "mnist"], "unknown workload mnist"),
    (["--impls", "numpy,tensorflow"], "unknown implementation tensorflow"),
    (["--dtypes", "float16"], "unknown dtype float16"),
    (["--repeats", "0"], "positive integer"),
    (["--sizes", "3"], "at least two"),
    (["--activation", "tanh"], "give --sizes too"),
    (["--workloads", "custom"], "needs --sizes"),
])
def test_bad_flags_exit_2_with_one_line(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_torch_cells_run_when_torch_is_installed():
    pytest.importorskip("torch")
    config = Config(impls=("numpy", "torch"), repeats=1, warmup=1).quick()
    with Bench(config) as bench:
        mlp_cell(bench, "mlp-grad", (8, 16, 4), 4, "float32")
        mlp_cell(bench, "mlp-adam", (8, 16, 4), 4, "float32", step="adam")
    assert {(r["workload"], r["impl"]) for r in bench.records} >= {
        ("mlp-grad", "numpy"), ("mlp-grad", "torch"), ("mlp-adam", "torch")}
    assert all(r["process"] == "worker" for r in bench.records if r["impl"] == "torch")


BENCH = Path(jp.__file__).parent / "bench"


def _bench_imports() -> dict[str, set[str]]:
    """``{module: the bench modules it imports}`` from every import statement of
    jaxprop/bench, function-level ones included (``from jaxprop.bench import X``: X, or the
    package's ``__init__`` when X is not a module)."""
    modules = {p.stem for p in BENCH.glob("*.py")}
    graph = {}
    for path in BENCH.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "jaxprop.bench":
                deps |= {a.name if a.name in modules else "__init__" for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "jaxprop.bench."):
                deps.add(node.module.split(".")[2])
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[2] for a in node.names
                         if a.name.startswith("jaxprop.bench.")}
        graph[path.stem] = deps - {path.stem}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules, or None."""
    state: dict[str, str] = {}

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep, path + [dep])):
                return found
        state[node] = "done"
        return None

    return next((c for n in sorted(graph) if n not in state and (c := visit(n, [n]))), None)


def test_bench_modules_import_each_other_without_a_cycle():
    graph = _bench_imports()
    assert {"jobs", "steps", "flops", "workloads", "cnn", "gpu"} <= set(graph)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the checker
    assert "workloads" not in graph["cnn"] | graph["gpu"] | graph["harness"]


def test_no_bench_module_imports_a_private_name_of_another():
    for path in BENCH.glob("*.py"):
        tree = ast.parse(path.read_text())
        modules = {a.asname or a.name for node in ast.walk(tree)
                   if isinstance(node, (ast.Import, ast.ImportFrom))
                   for a in node.names if isinstance(node, ast.Import)
                   or (node.module or "").startswith("jaxprop")}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jaxprop"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in modules and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                raise AssertionError(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")



@pytest.mark.long
def test_quick_xor_population_rows_run(tmp_path):
    """Every implementation of the population workload builds its call (a renamed helper once
    went unnoticed here)."""
    out = tmp_path / "bench.json"
    rc = main(["bench", "--quick", "--workloads", "xor-population", "--impls", "jaxprop,jax.grad",
               "--dtypes", "float32", "--repeats", "1", "--json", str(out)])
    assert rc == 0
    seen = {(r["workload"], r["impl"]) for r in json.loads(out.read_text())["records"]}
    assert {i for w, i in seen if w == "xor-population"} >= {"jaxprop", "jax.grad"}


def test_the_default_implementations_leave_out_torch_when_it_is_not_installed(monkeypatch):
    from jaxprop.bench import harness

    monkeypatch.setattr(harness, "has_torch", lambda: False)
    assert harness.Config().impls == ("numpy", "jaxprop", "jax.grad")
    monkeypatch.setattr(harness, "has_torch", lambda: True)
    assert harness.Config().impls == harness.IMPLS


def test_rounds_alternate_the_order_of_the_contenders():
    from jaxprop.bench import timing

    log = []

    class Runner:
        def warm(self, job, n):
            pass

        def time(self, job, calls):
            log.append(job)
            return 1.0

    contenders = [timing.Contender(Runner(), name, 0) for name in "abc"]
    times = timing.time_rounds(contenders, 4, min_block=0)
    assert log[3:] == list("abc" "cba" "abc" "cba")  # after one sizing call each
    assert [len(t) for t in times] == [4, 4, 4]


# ---------------------------------------------------------------- the report: 80 columns, ratios

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "cpu.json"


def _gpu_records():
    """GPU-like rows: every column, the widest values (peak memory, widths that vary)."""
    rows = []
    for width in (1024, 8192):
        for impl, seconds in (("matmul", 0.5), ("numpy", 99.0), ("jaxprop", 1.25),
                              ("jax.grad", 1.5), ("torch", 1.0)):
            rows.append({k: None for k in RECORD_KEYS} | dict(
                workload="gpu-mlp", impl=impl, variant="gradient", device="gpu:0",
                dtype="highest", batch=4096, width=width, median_s=seconds, min_s=seconds,
                max_s=seconds, compile_s=12.34, gflops=12345.6, roofline_ratio=1.0,
                vs_numpy=99.0 / seconds, vs_jax_grad=1.2, process="this",
                peak_bytes=81_000 * 2**20))
    return rows


def _rendered(records, summary) -> str:
    from rich.console import Console

    console = Console(width=200, record=True, file=open(os.devnull, "w"))
    report.print_table(console, records, summary)
    return console.export_text()


def test_printed_and_markdown_tables_fit_80_columns():
    """The tables' natural width (printed on a 200-column console) and the markdown's lines:
    at most 80 characters, for the committed CPU results and for GPU-like rows."""
    data = json.loads(RESULTS.read_text())
    records = data["records"] + _gpu_records()
    summary = report.targets(records)
    assert any(t["target"].startswith("gpu-mlp") for t in summary)
    printed = _rendered(records, summary)
    assert max(map(len, printed.splitlines())) <= 80
    assert "speed-ups" in printed and "vs jax.grad" in printed and " MiB" in printed
    text = report.markdown(data["header"], records, summary)
    assert max(map(len, text.splitlines())) <= 80
    assert text.count("| impl |") + text.count("| width | impl |") >= len(report.groups(records))


def test_every_ratio_reads_above_1_when_jaxprop_is_faster():
    """Columns and targets alike: the other's time / jaxprop's. jaxprop takes 1 s here, NumPy
    2 s, jax.grad 1.5 s; a time target is met below its goal."""
    entries = [Entry("numpy", "gradient", "cpu:0", fixed=[2.0]),
               Entry("jaxprop", "gradient", "cpu:0", fixed=[1.0]),
               Entry("jax.grad", "gradient", "cpu:0", fixed=[1.5])]
    with Harness(Config(impls=("jaxprop",)).quick()) as harness:
        cell = harness.cell("cnn", "float32", 8, 4, entries, roofline=False)
    hand = cell[1]
    assert hand["vs_numpy"] == 2.0 and hand["vs_jax_grad"] == 1.5
    columns = [k for _, k, _ in report.COLUMNS]
    cells = report._cells(hand)
    assert (cells[columns.index("vs_numpy")], cells[columns.index("vs_jax_grad")]) == \
        ("2.00x", "1.50x")
    found = {t["target"]: t for t in report.targets(cell)}
    assert found["cnn float32 cpu:0 batch 8: vs NumPy"]["value"] == 2.0
    assert found["cnn float32 cpu:0 batch 8: vs jax.grad"]["value"] == 1.5
    population = [dict(cell[0], workload="xor-population", variant="classic loop"),
                  dict(hand, workload="xor-population", variant="jp.fit_population",
                       batch=4000)]
    (pop,) = [t for t in report.targets(population) if t["target"].startswith("xor-pop")]
    assert pop["value"] == 2.0 and pop["met"] and report.format_goal(pop) == ">= 1x"
    slow = dict(hand, workload="xor", variant="jaxprop train (after JAX import)")
    (seconds,) = report.targets([slow])
    assert seconds["unit"] == "s" and seconds["met"] is False
    assert report.format_goal(seconds) == "<= 0.25 s"
