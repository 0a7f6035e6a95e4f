"""Reliability: threads, interrupts at any line, the caller's tensors, bad input, training mode.

The interrupt tests inject a ``KeyboardInterrupt`` (through ``sys.settrace``) at every line that zf_attr's set-up
and tear-down code executes during a call, one line per run, then check that the next call gives the right answer
and leaves nothing behind. The ``sweep`` marker runs the same over every line of zf_attr a call executes.
"""

from __future__ import annotations

import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import zf_attr
from zf_attr import Deconvnet, FeatureMapDeconvnet, GuidedBackprop, NeuronDeconvnet, OcclusionSensitivity
from zf_attr._fx import TRACE_LOCK
from zf_attr._lifecycle import live_attachments
from zf_attr.errors import ZFAttrWarning

PACKAGE = Path(zf_attr.__file__).resolve().parent
#: Set-up and tear-down code: whole files, or (file, function names) where the file holds other code too.
LIFECYCLE: dict[Path, set[str] | None] = {
    PACKAGE / "_lifecycle.py": None,
    PACKAGE / "_guard.py": None,
    PACKAGE / "_fx.py": None,
    PACKAGE / "_intercept.py": {"__enter__", "__exit__"},
    PACKAGE / "attr/_layers.py": {"capture_layer_output", "default_feature_layer", "children_chain"},
    PACKAGE / "attr/_rectified.py": {"layer_map"},
    PACKAGE / "occlusion/batching.py": {"measured_forward"},
    PACKAGE / "occlusion/incremental/select.py": {"count_macs"},
    PACKAGE / "occlusion/incremental/graph.py": {"traced_ops"},
}
#: One method per set-up path in the default run (the others share them); all of them under ``sweep``.
DEFAULT_INJECTION = ["deconvnet", "feature_map", "occlusion_incremental", "record_switches"]


def small_net() -> nn.Module:
    """In-place first layer, max-pools, batch norm, a dense tail: every lifecycle path, in milliseconds."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.ReLU(inplace=True),
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 5),
    ).eval()


def methods(model: nn.Module) -> dict[str, Callable[[torch.Tensor], Any]]:
    return {
        "deconvnet": lambda x: Deconvnet(model).attribute(x, target=1),
        "guided": lambda x: GuidedBackprop(model).attribute(x, target=[1, 2]),
        "neuron": lambda x: NeuronDeconvnet(model, "4").attribute(x, neuron_selector=(2, 1, 1)),
        "feature_map": lambda x: FeatureMapDeconvnet(model, "4").attribute(x, channels=[0, 3], crop=False).projections,
        "occlusion_batched": lambda x: OcclusionSensitivity(model, engine="batched").attribute(
            x, sliding_window_shapes=(3, 4, 4), strides=(3, 4, 4), target=1
        ),
        "occlusion_incremental": lambda x: OcclusionSensitivity(model, engine="incremental").attribute(
            x, sliding_window_shapes=(3, 4, 4), strides=(3, 4, 4), target=1, memory_budget=2**26
        ),
        "record_switches": lambda x: _switches(model, x),
    }


def _switches(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with zf_attr.record_switches(model) as trace:
        model(x.clone())
    return torch.cat([pool.indices.flatten().double() for pool in trace.pools] or [torch.zeros(0)])


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def leaks(model: nn.Module) -> list[str]:
    """Everything a call could leave behind, in words (empty: nothing)."""
    found = []
    for name, module in model.named_modules():
        for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_forward_hooks_always_called"):
            if getattr(module, kind, None):
                found.append(f"{name or '<model>'}.{kind}")
    from torch.nn.modules import module as module_globals

    for kind in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks"):
        if getattr(module_globals, kind):
            found.append(kind)
    from torch.overrides import _get_current_function_mode_stack

    if _get_current_function_mode_stack():
        found.append("torch-function mode")
    if live_attachments():
        found.append(f"{len(live_attachments())} live attachments")
    if torch.nn.Module.__call__ is not torch.nn.Module._wrapped_call_impl:
        found.append("nn.Module.__call__ patched")
    if not _free_in_another_thread(TRACE_LOCK):
        found.append("trace lock held")
    return found


def _free_in_another_thread(lock: Any) -> bool:
    """Whether another thread can take ``lock`` now (it gives it back at once)."""
    result: list[bool] = []

    def probe() -> None:
        taken = lock.acquire(blocking=False)
        if taken:
            lock.release()
        result.append(taken)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return result[0]


def lines_run(call: Callable[[], Any], only: dict[Path, set[str] | None] | None) -> list[tuple[str, int]]:
    """The distinct ``(file, line)`` of zf_attr (only those of ``only`` if given) that ``call()`` runs, in order."""
    seen: dict[tuple[str, int], None] = {}

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        path = Path(frame.f_code.co_filename)
        if not str(path).startswith(str(PACKAGE)):
            return None
        if only is not None and (path not in only or (only[path] and frame.f_code.co_name not in only[path])):
            return tracer  # not counted, but its callees may be
        if event == "line":
            seen.setdefault((frame.f_code.co_filename, frame.f_lineno), None)
        return tracer

    sys.settrace(tracer)
    try:
        call()
    finally:
        sys.settrace(None)
    return list(seen)


def interrupted_at(call: Callable[[], Any], where: tuple[str, int]) -> bool:
    """Run ``call()`` with a KeyboardInterrupt raised when it first reaches line ``where``; True if it raised."""
    fired = [False]

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if fired[0] or not frame.f_code.co_filename.startswith(str(PACKAGE)):
            return None
        if event == "line" and (frame.f_code.co_filename, frame.f_lineno) == where:
            fired[0] = True
            raise KeyboardInterrupt
        return tracer

    sys.settrace(tracer)
    try:
        call()
    except KeyboardInterrupt:
        return True
    finally:
        sys.settrace(None)
    return False


def run_injection(
    name: str, only: dict[Path, set[str] | None] | None, skip: set[tuple[str, int]] = frozenset()
) -> tuple[int, int]:
    """Inject at every line (but those in ``skip``, which then gets them); returns (points tried, points that left
    something behind until the next call)."""
    model = small_net()
    call = methods(model)[name]
    x = torch.randn(2, 3, 16, 16)
    x_before, state_before = x.clone(), state_of(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ZFAttrWarning)
        reference = call(x)
        points = [point for point in lines_run(lambda: call(x), only) if point not in skip]
        if isinstance(skip, set):
            skip.update(points)
        stale = 0
        for where in points:
            assert interrupted_at(lambda: call(x), where), f"{name}: no interrupt at {where}"
            stale += bool(leaks(model))
            again = call(x)  # recovers whatever the interrupt left, and gives the right answer
            torch.testing.assert_close(again, reference, msg=f"{name}: wrong answer after an interrupt at {where}")
            assert leaks(model) == [], f"{name}: interrupt at {where} left {leaks(model)}"
            assert torch.equal(x, x_before)
            state = state_of(model)
            assert all(torch.equal(state[k], state_before[k]) for k in state), f"{name}: state changed at {where}"
    return len(points), stale


def test_interrupt_at_any_setup_or_teardown_line_leaves_nothing() -> None:
    done: set[tuple[str, int]] = set()  # a line shared by several methods is tried in the first only
    tried = {name: run_injection(name, LIFECYCLE, done)[0] for name in DEFAULT_INJECTION}
    assert tried["deconvnet"] >= 50 and all(tried.values()), tried


@pytest.mark.sweep
@pytest.mark.parametrize("name", [name for name in methods(nn.Identity()) if name not in DEFAULT_INJECTION])
def test_interrupt_at_any_setup_or_teardown_line_of_every_method(name: str) -> None:
    run_injection(name, LIFECYCLE)


@pytest.mark.sweep
@pytest.mark.parametrize("name", list(methods(nn.Identity())))
def test_interrupt_at_any_line_of_a_call_leaves_nothing(name: str) -> None:
    run_injection(name, None)


def test_user_interception_context_survives_and_nesting_is_refused() -> None:
    model = small_net()
    x = torch.randn(1, 3, 16, 16)
    with zf_attr.record_switches(model) as trace:
        with pytest.raises(RuntimeError, match="already active"):
            Deconvnet(model).attribute(x, target=0)
        model(x)
    assert trace.pool_names == ["3", "7"]
    assert leaks(model) == []


# ----------------------------------------------------------------------------------------------------- threads
def test_threads_give_sequential_results_and_leave_no_patch() -> None:
    import torchvision

    models = {
        "resnet18": torchvision.models.resnet18(num_classes=4).eval(),
        "googlenet": torchvision.models.googlenet(num_classes=4, aux_logits=False, init_weights=True).eval(),
    }
    x = torch.randn(1, 3, 32, 32)

    def run(kind: str, model: nn.Module) -> Any:
        if kind == "occlusion":
            occlusion = OcclusionSensitivity(model, engine="incremental")
            return occlusion.attribute(x, sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8), target=1)
        if kind == "deconvnet":
            return Deconvnet(model).attribute(x, target=1)
        if kind == "switches":
            with zf_attr.record_switches(model) as trace:
                model(x)
            return trace.pool_names
        with torch.no_grad():
            return model(x)

    kinds = ["occlusion", "deconvnet", "switches", "plain"]
    expected = {(name, kind): run(kind, model) for name, model in models.items() for kind in kinds}
    from zf_attr.occlusion.incremental import graph

    graph._traced.clear()  # every thread races to trace
    failures: list[str] = []
    done: list[int] = []

    def worker(index: int) -> None:
        try:
            name = list(models)[index % 2]
            for step in range(4):
                kind = kinds[(index + step) % 4]
                got = run(kind, models[name])
                want = expected[name, kind]
                same = got == want if kind == "switches" else torch.allclose(got, want, rtol=1e-4, atol=1e-5)
                if not same:
                    failures.append(f"{name} {kind}: differs from the sequential result")
                done.append(1)
        except Exception as error:  # collected, reported below
            failures.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(done) == 24
    for model in models.values():
        assert leaks(model) == []


def test_training_mode_calls_from_threads_are_serialised_and_restore_buffers() -> None:
    model = small_net().train()
    before = state_of(model)
    x = torch.randn(4, 3, 16, 16)
    errors: list[str] = []

    def worker() -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ZFAttrWarning)
                for _ in range(3):
                    Deconvnet(model).attribute(x, target=0)
        except Exception as error:
            errors.append(repr(error))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    after = state_of(model)
    assert all(torch.equal(after[k], before[k]) for k in before)


# ----------------------------------------------------------------------------------------------------- aliasing
@pytest.mark.parametrize("name", [n for n in methods(nn.Identity()) if n != "record_switches"])
def test_in_place_first_layer_never_writes_the_callers_input(name: str) -> None:
    model = small_net()
    x = torch.randn(2, 3, 16, 16)  # half negative: the in-place ReLU would zero them
    before = x.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ZFAttrWarning)
        first = methods(model)[name](x)
        second = methods(model)[name](x)
    assert torch.equal(x, before)
    torch.testing.assert_close(first, second)


def test_in_place_first_layer_deconvnet_equals_captum() -> None:
    from captum.attr import Deconvolution

    model = small_net()
    x = torch.randn(2, 3, 16, 16)
    before = x.clone()
    ours = Deconvnet(model).attribute(x, target=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = Deconvolution(model).attribute(x.clone(), target=1)
    assert torch.equal(x, before)
    torch.testing.assert_close(ours, theirs)


# ------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", ["deconvnet", "guided", "neuron", "feature_map", "occlusion_batched"])
def test_non_finite_inputs_are_refused_with_the_count(name: str, value: float) -> None:
    model = small_net()
    x = torch.randn(2, 3, 16, 16)
    x[0, 1, 2, 3] = value
    x[1, 0, 0, 0] = value
    with pytest.raises(ValueError, match=r"inputs holds 2 non-finite"):
        methods(model)[name](x)


def test_non_finite_baselines_are_refused() -> None:
    model = small_net()
    with pytest.raises(ValueError, match=r"baselines holds 1 non-finite"):
        OcclusionSensitivity(model).attribute(
            torch.randn(1, 3, 16, 16), sliding_window_shapes=(3, 4, 4), baselines=float("nan"), target=0
        )


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda: torch.randn(1, 3, 16, 16, dtype=torch.float64), TypeError, "float64 but the model's parameters"),
        (lambda: torch.randn(1, 3, 16, 16, dtype=torch.float16), TypeError, "float16 but the model's parameters"),
        (lambda: torch.empty(1, 3, 16, 16, device="meta"), ValueError, "meta tensor"),
    ],
)
@pytest.mark.parametrize("name", ["deconvnet", "neuron", "feature_map", "occlusion_batched"])
def test_dtype_and_meta_mismatch_named_before_any_work(name: str, make: Any, error: type, words: str) -> None:
    model = small_net()
    calls = []
    model[1].register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(error, match=words):
        methods(model)[name](make())
    assert calls == []


def test_extra_forward_arguments_the_model_cannot_take() -> None:
    model = small_net()
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(TypeError, match="additional_forward_args"):
        Deconvnet(model).attribute(x, target=0, additional_forward_args=(torch.ones(1),))
    with pytest.raises(TypeError, match="additional_forward_args"):
        OcclusionSensitivity(model).attribute(
            x, sliding_window_shapes=(3, 4, 4), target=0, additional_forward_args=(torch.ones(1),)
        )


def test_bad_target_fails_before_the_sweep() -> None:
    model = small_net()
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(TypeError, match="target"):
        OcclusionSensitivity(model).attribute(torch.randn(1, 3, 16, 16), sliding_window_shapes=(3, 4, 4), target=3.0)
    assert len(calls) <= 1  # the unoccluded pass at most, never the sweep


# ---------------------------------------------------------------------------------------------- training mode
@pytest.mark.parametrize("name", ["deconvnet", "guided", "neuron", "feature_map", "occlusion_batched"])
def test_training_mode_warns_once_and_restores_buffers_bitwise(name: str) -> None:
    model = small_net().train()
    before = state_of(model)
    with pytest.warns(ZFAttrWarning, match="training mode") as record:
        methods(model)[name](torch.randn(2, 3, 16, 16))
    assert sum("training mode" in str(w.message) for w in record) == 1
    after = state_of(model)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert model.training and all(m.training for m in model.modules())


def test_eval_model_without_batch_norm_or_dropout_does_not_warn() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.LazyLinear(3))
    model(torch.randn(1, 3, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ZFAttrWarning)
        Deconvnet(model).attribute(torch.randn(1, 3, 8, 8), target=0)


# --------------------------------------------------------------------------------------------- Captum contract
def test_integer_inputs_and_baselines_work_in_occlusion_as_in_captum() -> None:
    from captum.attr import Occlusion

    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, 4), nn.Flatten(), nn.Linear(6 * 4, 3)).eval()
    tokens = torch.randint(1, 20, (2, 6))
    ours = OcclusionSensitivity(model).attribute(tokens, sliding_window_shapes=(2,), baselines=0, target=2)
    theirs = Occlusion(model).attribute(tokens, sliding_window_shapes=(2,), baselines=0, target=2)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize(
    "method",
    [
        lambda m: Deconvnet(m),
        lambda m: GuidedBackprop(m),
        lambda m: NeuronDeconvnet(m, "4"),
        lambda m: OcclusionSensitivity(m),
    ],
)
def test_attribute_future_is_not_implemented_as_in_captum(method: Any) -> None:
    with pytest.raises(NotImplementedError, match="attribute_future"):
        method(small_net()).attribute_future()


# ---------------------------------------------------------------------------------------------------- budgets
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak resident memory reset needs Linux")
@pytest.mark.parametrize(("engine", "budget_mib"), [("incremental", 56), ("batched", 24)])
def test_peak_memory_growth_stays_within_the_budget(engine: str, budget_mib: int) -> None:
    sys.path.insert(0, str(PACKAGE.parent))
    from benchmarks.bench_memory_budget import measure

    case = measure("resnet18", 112, budget_mib, engine, stride=16)  # 49 windows
    assert case["engine"] == engine
    assert case["windows_per_batch"] > 1
    assert case["within_budget"], case


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak resident memory reset needs Linux")
def test_the_budget_measurement_sees_what_a_large_batch_costs() -> None:
    sys.path.insert(0, str(PACKAGE.parent))
    from benchmarks.bench_memory_budget import measure

    case = measure("resnet18", 112, 2**20, "batched", stride=16)  # 1 TiB: every window in one pass
    assert case["windows_per_batch"] == 49
    assert case["growth_mib"] > 2 * 24, case  # 82 MiB measured: twice the budget the test above keeps


@pytest.mark.sweep
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak resident memory reset needs Linux")
def test_convnext_keeps_an_explicit_budget() -> None:
    """ConvNeXt-T at 224 (an even 14 x 14 grid) under 128 MiB grew by 135 MiB with copies sized on a border window."""
    sys.path.insert(0, str(PACKAGE.parent))
    from benchmarks.bench_memory_budget import measure

    case = measure("convnext_tiny", 224, 128, "incremental", stride=16)
    assert case["within_budget"], case


def tensors_left_in_cycles(call: Callable[[], Any]) -> list[tuple[int, ...]]:
    """Shapes of the tensors made by ``call()`` that only the cycle collector would free (collector paused).

    Tensors that existed before (a model's weights, say, freed when an earlier test's cached trace is evicted
    during the call) are held here, so they are never reported.
    """
    import gc

    gc.collect()
    existing = [o for o in gc.get_objects() if isinstance(o, torch.Tensor)]
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        call()
        gc.collect()
        return [tuple(o.shape) for o in gc.garbage if isinstance(o, torch.Tensor)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        del existing


@pytest.mark.parametrize("name", ["resnet18", "shufflenet_v2_x0_5"])
def test_an_engine_batch_leaves_no_tensor_in_reference_cycles(name: str) -> None:
    """A cycle per op call kept each batch's tensors until the collector ran: ResNet-18 at 224 grew by 300 MiB
    under a 128 MiB budget (ShuffleNet: the folded ``x.size()`` nodes of its channel shuffle)."""
    import torchvision

    from zf_attr.occlusion.incremental.engine import IncrementalEngine

    torch.manual_seed(0)
    engine = IncrementalEngine(torchvision.models.get_model(name, num_classes=10).eval(), torch.randn(1, 3, 64, 64))
    windows = [(slice(0, 3), slice(16, 24), slice(16, 24)), (slice(0, 3), slice(0, 8), slice(40, 48))]
    engine.run(windows, torch.zeros(()))
    assert tensors_left_in_cycles(lambda: engine.run(windows, torch.zeros(()))) == []


@pytest.mark.parametrize("name", ["deconvnet", "guided", "neuron", "feature_map", "occlusion_batched",
                                  "occlusion_incremental", "record_switches"])  # fmt: skip
def test_a_call_leaves_no_tensor_in_reference_cycles(name: str) -> None:
    """The interceptor, its handlers and its mode referred to one another: each call's switches and records lived
    until a full garbage collection (VGG-11, 4 images at 128 x 128: +370 MiB resident over 120 Deconvnet calls)."""
    model, x = small_net(), torch.randn(2, 3, 16, 16)
    call = methods(model)[name]
    call(x)
    assert tensors_left_in_cycles(lambda: call(x)) == []


def test_the_engine_sizes_a_copy_on_the_central_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A window's changes spread furthest from the middle of the grid; a border window underestimates a copy."""
    from zf_attr.occlusion.incremental.engine import IncrementalEngine

    seen = []
    original = IncrementalEngine.bytes_per_copy

    def spy(self: IncrementalEngine, window: tuple[slice, ...], baseline: torch.Tensor) -> int:
        seen.append(window)
        return original(self, window, baseline)

    monkeypatch.setattr(IncrementalEngine, "bytes_per_copy", spy)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.Flatten(),
                          nn.LazyLinear(2)).eval()  # fmt: skip
    x = torch.randn(1, 3, 32, 32)
    model(x)
    OcclusionSensitivity(model, engine="incremental").attribute(x, (3, 4, 4), strides=(3, 4, 4), target=0)
    assert seen == [(slice(0, 3), slice(16, 20), slice(16, 20))]  # position (4, 4) of the 8 x 8 grid


def test_the_engine_holds_about_its_cache_while_it_builds_it() -> None:
    """Values no batch reads are dropped during the unoccluded pass, so a limit just above the cache is enough."""
    import torchvision

    from zf_attr.occlusion.incremental import CacheTooLargeError
    from zf_attr.occlusion.incremental.engine import IncrementalEngine

    torch.manual_seed(0)
    model = torchvision.models.convnext_tiny(num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    cache = IncrementalEngine(model, x).cache_bytes
    IncrementalEngine(model, x, max_cache_bytes=int(1.25 * cache))  # before: held between 1.5 and 2 x the cache
    with pytest.raises(CacheTooLargeError, match=r"memory_budget=[\d.]+ MiB cannot hold the incremental engine"):
        IncrementalEngine(model, x, max_cache_bytes=cache // 4)


def test_an_explicit_budget_too_small_for_the_engine_falls_back_before_the_pass_holds_more() -> None:
    from zf_attr.occlusion.incremental import engine as engine_module

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.LazyLinear(2)).eval()  # fmt: skip
    x = torch.randn(1, 3, 64, 64)
    model(x)
    reference = OcclusionSensitivity(model, engine="batched").attribute(x, (3, 8, 8), strides=(3, 8, 8), target=0)
    method = OcclusionSensitivity(model, engine="incremental")
    built = []
    original = engine_module.IncrementalEngine._prune_caches
    engine_module.IncrementalEngine._prune_caches = lambda self: built.append(1) or original(self)
    try:
        with pytest.warns(ZFAttrWarning, match=r"memory_budget=0.2 MiB cannot hold the incremental engine's cache"):
            result = method.attribute(x, (3, 8, 8), strides=(3, 8, 8), target=0, memory_budget=2**18)
    finally:
        engine_module.IncrementalEngine._prune_caches = original
    assert built == []  # stopped during the unoccluded pass, before the whole cache existed
    assert method.last_engine == "batched"
    torch.testing.assert_close(result, reference)


def test_a_budget_below_one_copy_warns_with_the_size_needed() -> None:
    model = small_net()
    with pytest.warns(ZFAttrWarning, match=r"memory_budget=0.0 MiB is below the ~.* pass memory_budget >= \d+"):
        OcclusionSensitivity(model, engine="batched").attribute(
            torch.randn(1, 3, 16, 16), sliding_window_shapes=(3, 4, 4), target=0, memory_budget=1000
        )


def test_occlusion_study_refuses_a_float_target_before_any_work() -> None:
    from zf_attr.analysis import occlusion_study

    model = small_net()
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(TypeError, match=r"target=3.0 must be an int"):
        occlusion_study(model, torch.rand(3, 16, 16), target=3.0, layer="4", window=4, stride=4)
    assert calls == []


# ------------------------------------------------------------------------------- the family x method matrix
FAMILIES = [
    "alexnet", "vgg11_bn", "resnet18", "googlenet", "inception_v3", "densenet121", "mobilenet_v2",
    "mobilenet_v3_small", "squeezenet1_1", "shufflenet_v2_x0_5", "mnasnet0_5", "efficientnet_b0", "regnet_y_400mf",
    "convnext_tiny", "resnext50_32x4d", "wide_resnet50_2",
]  # fmt: skip


def family(name: str) -> nn.Module:
    import torchvision

    options = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None, num_classes=7, **options).eval()


def family_methods(model: nn.Module, layer: str) -> dict[str, Callable[[torch.Tensor, Any], Any]]:
    window = {"sliding_window_shapes": (3, 40, 40), "strides": (3, 40, 40)}
    return {
        "deconvnet": lambda x, t: Deconvnet(model).attribute(x, target=t),
        "guided": lambda x, t: GuidedBackprop(model).attribute(x, target=t),
        "deconvnet_strict": lambda x, t: Deconvnet(model, variant="strict").attribute(x, target=t),
        "neuron": lambda x, t: NeuronDeconvnet(model, layer).attribute(x, neuron_selector=(0, 0, 0)),
        "feature_map": lambda x, t: FeatureMapDeconvnet(model, layer).attribute(x, channels=[0], crop=False),
        "occlusion": lambda x, t: OcclusionSensitivity(model, engine="batched").attribute(
            x, target=t, perturbations_per_eval=1, **window
        ),
        "occlusion_incremental": lambda x, t: OcclusionSensitivity(model, engine="incremental").attribute(
            x, target=t, **window
        ),
        "switches": lambda x, t: _switches(model, x),
    }


class _PlannedError(Exception):
    pass


def _raising_on_call(when: int, error: type[BaseException]) -> Callable[..., None]:
    calls = [0]

    def hook(module: nn.Module, args: Any) -> None:
        calls[0] += 1
        if calls[0] == when:
            raise error

    return hook


@pytest.mark.sweep
@pytest.mark.parametrize("name", FAMILIES)
def test_family_method_matrix_leaves_nothing(name: str) -> None:
    """Every family x method, called normally, with a bad target, with a raising forward, interrupted mid-forward."""
    from zf_attr.attr._layers import default_feature_layer

    model = family(name)
    size = 80 if name != "inception_v3" else 96
    x = torch.randn(1, 3, size, size)
    x_before, state_before = x.clone(), state_of(model)
    layer = default_feature_layer(model, (x,))
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method, call in family_methods(model, layer).items():
            call(x, 1)
            assert leaks(model) == [], (name, method, "normal")
            if method not in ("switches", "neuron", "feature_map"):
                with pytest.raises((ValueError, TypeError)):
                    call(x, 99)
                assert leaks(model) == [], (name, method, "bad target")
            when = 3 if method == "occlusion" else 1  # the batched sweep's second window, else the first pass
            for error in (_PlannedError, KeyboardInterrupt):
                explode = _raising_on_call(when, error)
                handle = convs[len(convs) // 2].register_forward_pre_hook(explode)
                try:
                    with pytest.raises(error):
                        call(x, 1)
                finally:
                    handle.remove()
                assert leaks(model) == [], (name, method, error.__name__)
            assert torch.equal(x, x_before), (name, method)
    state = state_of(model)
    assert all(torch.equal(state[k], state_before[k]) for k in state), name
