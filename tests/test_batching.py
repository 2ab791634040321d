"""The batcher with a fake clock and a fake platform: deterministic, no sleeps.

The scheduler runs with ``threads=0``: the test takes and runs batches itself
(``step``/``execute``/``run_ready``) at times it sets with ``FakeClock``.
Tests that need real threads synchronise on events, never on time.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Collection, Coroutine, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from modelserve.dtypes import DType
from modelserve.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from modelserve.execution.batching import (
    QUEUE_TIMEOUT_MESSAGE,
    Batcher,
    BatchingParameters,
    BatchScheduler,
    BatchStats,
    FakeClock,
)
from modelserve.execution.request_options import RequestOptions
from modelserve.execution.runner import run_inline
from modelserve.signatures import DEFAULT_SIGNATURE, Signature, TensorSpec

TIMEOUT = 0.010  # batch_timeout_micros of most tests, in seconds


class Rows:
    """A fake platform whose rows are independent: y = 10 x + 1 (float), plus a record of every batch."""

    def __init__(self, outputs: Collection[str] = ("y", "z")) -> None:
        spec = TensorSpec("x", DType.DT_FLOAT, (-1, -1))
        out = {n: TensorSpec(n, DType.DT_FLOAT, (-1,)) for n in outputs}
        self.signatures = {DEFAULT_SIGNATURE: Signature({"x": spec}, out)}
        self.batches: list[np.ndarray] = []
        self.fail: Exception | None = None
        self.transform = lambda x: {"y": x * 10 + 1, "z": x.sum(axis=tuple(range(1, x.ndim)))}

    def predict(
        self, signature: str, inputs: Mapping[str, np.ndarray], output_filter: Collection[str] = ()
    ) -> dict[str, np.ndarray]:
        self.batches.append(inputs["x"].copy())
        if self.fail is not None:
            raise self.fail
        outputs = self.transform(inputs["x"])
        return {k: v for k, v in outputs.items() if not output_filter or k in output_filter}

    def close(self) -> None:
        pass

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]


def params(**changes: Any) -> BatchingParameters:
    base = BatchingParameters(max_batch_size=8, batch_timeout_micros=int(TIMEOUT * 1e6), max_enqueued_batches=4)
    return replace(base, **changes)


class Rig:
    """A batcher over ``Rows`` on a manual scheduler and a fake clock."""

    def __init__(self, instances: int = 1, **changes: Any) -> None:
        self.clock = FakeClock()
        self.stats: list[BatchStats] = []
        self.dropped: list[str] = []
        self.scheduler = BatchScheduler(0, clock=self.clock, metrics=self)
        self.servable = Rows()
        self.servable.instance_count = instances  # type: ignore[attr-defined]  # what modelserve.execution.instances exposes
        self.batcher = Batcher(self.scheduler, self.servable, params(**changes), "m", 1)

    def batch_done(self, stats: BatchStats) -> None:
        self.stats.append(stats)

    def request_dropped(self, model: str, version: int, reason: str) -> None:
        self.dropped.append(reason)

    def send(self, x: np.ndarray, **kwargs: Any) -> asyncio.Task[dict[str, np.ndarray]]:
        return asyncio.ensure_future(self.batcher.predict(DEFAULT_SIGNATURE, {"x": x}, **kwargs))


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


async def settle() -> None:
    """Let submitted requests reach their queue, and delivered results reach their awaiters."""
    for _ in range(3):
        await asyncio.sleep(0)


def rows(n: int, start: float = 0.0, width: int = 3) -> np.ndarray:
    return (np.arange(n * width, dtype=np.float32).reshape(n, width) + start).astype(np.float32)


def expected(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": x * 10 + 1, "z": x.sum(axis=1)}


def assert_outputs(got: Mapping[str, np.ndarray], x: np.ndarray) -> None:
    want = expected(x)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


# ---- batch formation ----------------------------------------------------------------------


def test_requests_waiting_together_run_as_one_batch_and_get_their_own_rows() -> None:
    async def scenario() -> None:
        rig = Rig()
        inputs = [rows(1, 0), rows(2, 100), rows(1, 200)]
        tasks = [rig.send(x) for x in inputs]
        await settle()
        assert rig.scheduler.run_ready() == 1
        await settle()
        assert rig.servable.sizes == [4]
        for task, x in zip(tasks, inputs, strict=True):
            assert_outputs(task.result(), x)
        assert rig.stats[0].task_rows == (1, 2, 1) and rig.stats[0].padding == 0

    run(scenario())


def test_a_request_at_an_idle_model_runs_at_once_without_waiting_for_the_timeout() -> None:
    async def scenario() -> None:
        rig = Rig(batch_timeout_micros=10_000_000)  # 10 s
        task = rig.send(rows(1))
        await settle()
        assert rig.scheduler.run_ready() == 1  # the clock has not moved
        await settle()
        assert_outputs(task.result(), rows(1))

    run(scenario())


def test_while_the_platform_is_busy_a_partial_batch_waits_for_the_timeout() -> None:
    async def scenario() -> None:
        rig = Rig()
        first = rig.send(rows(1))
        await settle()
        running = rig.scheduler.step()  # taken, not finished: the platform is busy
        assert running is not None
        later = [rig.send(rows(1, 10)), rig.send(rows(1, 20))]
        await settle()
        assert rig.scheduler.step() is None
        rig.clock.advance(TIMEOUT / 2)
        assert rig.scheduler.step() is None
        rig.clock.advance(TIMEOUT / 2)
        second = rig.scheduler.step()
        assert second is not None and second.rows == 2
        rig.scheduler.execute(running)
        rig.scheduler.execute(second)
        await settle()
        assert_outputs(first.result(), rows(1))
        assert_outputs(later[1].result(), rows(1, 20))

    run(scenario())


def test_a_full_batch_runs_at_once_even_while_the_platform_is_busy() -> None:
    async def scenario() -> None:
        rig = Rig(max_batch_size=4)
        rig.send(rows(1))
        await settle()
        running = rig.scheduler.step()
        assert running is not None
        tasks = [rig.send(rows(1, i)) for i in range(5)]
        await settle()
        full = rig.scheduler.step()
        assert full is not None and full.rows == 4
        assert rig.scheduler.step() is None  # one row left: waits
        rig.scheduler.execute(running)
        rig.scheduler.execute(full)
        rig.clock.advance(TIMEOUT)
        assert rig.scheduler.run_ready() == 1
        await settle()
        assert [t.done() for t in tasks] == [True] * 5

    run(scenario())


def test_once_idle_the_queue_waits_for_as_many_rows_as_its_previous_batch_had() -> None:
    async def scenario() -> None:
        rig = Rig()
        for i in range(3):
            rig.send(rows(1, i))
        await settle()
        rig.scheduler.run_ready()
        assert rig.servable.sizes == [3]
        rig.send(rows(1))
        await settle()
        assert rig.scheduler.run_ready() == 0  # one of the three is back; the others are on their way
        rig.send(rows(1))
        rig.send(rows(1))
        await settle()
        assert rig.scheduler.run_ready() == 1
        assert rig.servable.sizes == [3, 3]

    run(scenario())


def test_with_two_instances_idle_ones_split_the_waiting_rows_and_run_side_by_side() -> None:
    async def scenario() -> None:
        rig = Rig(instances=2, batch_timeout_micros=10_000_000)  # 10 s: only the eager rule fires
        inputs = [rows(3, 0), rows(5, 100)]
        tasks = [rig.send(x) for x in inputs]
        await settle()
        # 8 rows wait and both instances are idle: each takes its share, whole requests only.
        first, second = rig.scheduler.step(), rig.scheduler.step()
        assert first is not None and second is not None
        assert (first.rows, second.rows) == (3, 5)
        assert rig.scheduler.step() is None  # nothing is left
        rig.scheduler.execute(second)
        rig.scheduler.execute(first)
        await settle()
        for task, x in zip(tasks, inputs, strict=True):
            assert_outputs(task.result(), x)
        assert rig.servable.sizes == [5, 3]

    run(scenario())


def test_with_two_instances_an_idle_one_runs_its_share_of_the_load_beside_the_busy_one() -> None:
    async def scenario() -> None:
        rig = Rig(instances=2, batch_timeout_micros=10_000_000)  # 10 s: only the eager rule fires
        rig.send(rows(8))
        await settle()
        first = rig.scheduler.step()  # one request: 8 rows in flight from now on
        assert first is not None and first.rows == 8
        tasks = [rig.send(rows(1, 100 + i)) for i in range(4)]
        await settle()
        # Half the load is waiting: the idle instance runs it now rather than wait for 8 more rows.
        second = rig.scheduler.step()
        assert second is not None and second.rows == 4
        rig.scheduler.execute(first)
        rig.scheduler.execute(second)
        await settle()
        for i, task in enumerate(tasks):
            assert_outputs(task.result(), rows(1, 100 + i))
        # 12 rows were in flight when the second batch started: with both instances idle, the
        # queue waits for 6 (an instance's share), neither 1 nor 12, and the two split them.
        later = [rig.send(rows(1, 200 + i)) for i in range(5)]
        await settle()
        assert rig.scheduler.step() is None
        later.append(rig.send(rows(1, 205)))
        await settle()
        third, fourth = rig.scheduler.step(), rig.scheduler.step()
        assert third is not None and fourth is not None and (third.rows, fourth.rows) == (3, 3)
        rig.scheduler.execute(third)
        rig.scheduler.execute(fourth)
        await settle()
        for i, task in enumerate(later):
            assert_outputs(task.result(), rows(1, 200 + i))

    run(scenario())


def test_batch_timeout_zero_runs_whatever_waits_when_a_thread_is_free() -> None:
    async def scenario() -> None:
        rig = Rig(batch_timeout_micros=0)
        rig.send(rows(1))
        await settle()
        running = rig.scheduler.step()
        rig.send(rows(1))
        await settle()
        assert rig.scheduler.step() is not None  # TF's rule: no waiting at all
        assert running is not None

    run(scenario())


def test_batches_pad_up_to_the_next_allowed_size_with_the_last_requests_first_row() -> None:
    async def scenario() -> None:
        rig = Rig(allowed_batch_sizes=(2, 4, 8))
        inputs = [rows(1, 0), rows(2, 50)]
        tasks = [rig.send(x) for x in inputs]
        await settle()
        rig.scheduler.run_ready()
        await settle()
        batch = rig.servable.batches[0]
        assert batch.shape == (4, 3)
        np.testing.assert_array_equal(batch[3], inputs[1][0])
        for task, x in zip(tasks, inputs, strict=True):
            assert_outputs(task.result(), x)
        assert (rig.stats[0].rows, rig.stats[0].padded_rows) == (3, 4)

    run(scenario())


def test_requests_of_different_shapes_run_in_separate_batches_without_padding() -> None:
    async def scenario() -> None:
        rig = Rig()
        a, b, c = rows(1, 0, width=3), rows(1, 0, width=5), rows(2, 7, width=3)
        tasks = [rig.send(x) for x in (a, b, c)]
        await settle()
        assert rig.scheduler.run_ready() == 1
        rig.clock.advance(TIMEOUT)  # the second shape waits like any partial batch
        assert rig.scheduler.run_ready() == 1
        await settle()
        assert [x.shape for x in rig.servable.batches] == [(3, 3), (1, 5)]
        for task, x in zip(tasks, (a, b, c), strict=True):
            assert_outputs(task.result(), x)

    run(scenario())


def test_pad_variable_length_inputs_pads_with_each_tensors_first_element() -> None:
    async def scenario() -> None:
        rig = Rig(pad_variable_length_inputs=True)
        rig.servable.transform = lambda x: {"y": x * 2}
        a = np.array([[7, 8]], dtype=np.float32)
        b = np.array([[1, 2, 3, 4]], dtype=np.float32)
        ta, tb = rig.send(a), rig.send(b)
        await settle()
        rig.scheduler.run_ready()
        await settle()
        np.testing.assert_array_equal(rig.servable.batches[0], [[7, 8, 7, 7], [1, 2, 3, 4]])
        # As TF Serving: the padded request gets the rows of the padded batch.
        np.testing.assert_array_equal(ta.result()["y"], [[14, 16, 14, 14]])
        np.testing.assert_array_equal(tb.result()["y"], b * 2)

    run(scenario())


def test_output_filters_and_signatures_get_queues_of_their_own() -> None:
    async def scenario() -> None:
        rig = Rig()
        t1 = rig.send(rows(1), output_filter=("y",))
        t2 = rig.send(rows(1, 5))
        await settle()
        assert rig.scheduler.run_ready() == 2
        await settle()
        assert set(t1.result()) == {"y"} and set(t2.result()) == {"y", "z"}

    run(scenario())


# ---- large requests --------------------------------------------------------------------------


def test_a_request_larger_than_max_batch_size_fails_with_tf_servings_message() -> None:
    async def scenario() -> None:
        rig = Rig(max_batch_size=4)
        with pytest.raises(InvalidArgument, match=r"^Task size 5 is larger than maximum input batch size 4$"):
            await rig.batcher.predict(DEFAULT_SIGNATURE, {"x": rows(5)})

    run(scenario())


def test_large_batch_splitting_runs_a_big_request_in_pieces_and_joins_its_rows() -> None:
    async def scenario() -> None:
        rig = Rig(max_batch_size=16, enable_large_batch_splitting=True, max_execution_batch_size=4)
        small = rig.send(rows(1, 1000))
        big_x = rows(10)
        big = rig.send(big_x)
        await settle()
        assert rig.scheduler.run_ready() == 3
        await settle()
        assert rig.servable.sizes == [4, 4, 3]
        assert_outputs(big.result(), big_x)
        assert_outputs(small.result(), rows(1, 1000))

    run(scenario())


# ---- bounded queues ----------------------------------------------------------------------------


def test_a_full_queue_refuses_at_once_with_tf_servings_unavailable_message() -> None:
    async def scenario() -> None:
        rig = Rig(max_batch_size=2, max_enqueued_batches=1)
        rig.send(rows(1))
        await settle()
        assert rig.scheduler.step() is not None  # running: no longer counts as enqueued
        rig.send(rows(1))
        rig.send(rows(1))
        await settle()
        with pytest.raises(Unavailable) as caught:
            await rig.batcher.predict(DEFAULT_SIGNATURE, {"x": rows(1)})
        assert caught.value.message == (
            "The batch scheduling queue to which this task was submitted is full; "
            "currently 1 batches enqueued and max_enqueued_batches is 1"
        )
        assert rig.dropped == ["queue_full"]

    run(scenario())


# ---- deadlines, queue timeouts, cancellation ----------------------------------------------------


def test_a_deadline_that_passes_in_the_queue_answers_without_running_the_request() -> None:
    async def scenario() -> None:
        rig = Rig()
        rig.send(rows(1))
        await settle()
        running = rig.scheduler.step()
        late = rig.send(rows(1, 9), deadline=rig.clock.now() + TIMEOUT / 2)
        await settle()
        rig.clock.advance(TIMEOUT / 2)
        await settle()
        with pytest.raises(ResourceExhausted, match=re.escape(QUEUE_TIMEOUT_MESSAGE)):
            late.result()
        assert running is not None
        rig.scheduler.execute(running)
        rig.clock.advance(TIMEOUT)
        assert rig.scheduler.run_ready() == 0
        assert rig.servable.sizes == [1] and rig.dropped == ["timeout"]

    run(scenario())


def test_a_deadline_that_passes_while_the_batch_runs_answers_deadline_exceeded() -> None:
    async def scenario() -> None:
        rig = Rig()
        task = rig.send(rows(1), deadline=rig.clock.now() + TIMEOUT)
        await settle()
        running = rig.scheduler.step()
        rig.clock.advance(TIMEOUT)
        await settle()
        with pytest.raises(DeadlineExceeded):
            task.result()
        assert running is not None
        rig.scheduler.execute(running)  # its rows are dropped
        await settle()

    run(scenario())


def test_the_models_queue_timeout_and_a_requests_own_queue_timeout() -> None:
    async def scenario() -> None:
        rig = Rig(queue_timeout_micros=5_000, batch_timeout_micros=1_000_000)
        rig.send(rows(1))
        await settle()
        running = rig.scheduler.step()
        default = rig.send(rows(1))
        patient = rig.send(rows(1), request_options=RequestOptions(queue_timeout=0.020))
        unbounded = rig.send(rows(1), request_options=RequestOptions(queue_timeout=0.0))
        await settle()
        rig.clock.advance(0.005)
        await settle()
        assert default.done() and not patient.done()
        rig.clock.advance(0.015)
        await settle()
        assert patient.done() and not unbounded.done()
        with pytest.raises(ResourceExhausted):
            patient.result()
        assert running is not None
        rig.scheduler.execute(running)
        assert rig.scheduler.run_ready() == 1
        await settle()
        assert_outputs(unbounded.result(), rows(1))

    run(scenario())


def test_a_cancelled_request_leaves_its_queue() -> None:
    async def scenario() -> None:
        rig = Rig()
        rig.send(rows(1))
        await settle()
        running = rig.scheduler.step()
        gone = rig.send(rows(1, 3))
        kept = rig.send(rows(1, 4))
        await settle()
        gone.cancel()
        await settle()
        assert running is not None
        rig.scheduler.execute(running)
        rig.clock.advance(TIMEOUT)
        rig.scheduler.run_ready()
        await settle()
        assert rig.servable.sizes == [1, 1]
        assert_outputs(kept.result(), rows(1, 4))
        assert rig.dropped == ["cancelled"]

    run(scenario())


# ---- priorities --------------------------------------------------------------------------------


def test_higher_priority_requests_are_taken_first() -> None:
    async def scenario() -> None:
        rig = Rig(priority_levels=3, default_priority_level=2, max_batch_size=2)
        rig.send(rows(1))
        await settle()
        running = rig.scheduler.step()
        low = rig.send(rows(1, 1), request_options=RequestOptions(priority=3))
        normal = rig.send(rows(1, 2))
        high = rig.send(rows(1, 3), request_options=RequestOptions(priority=1))
        await settle()
        first = rig.scheduler.step()
        assert first is not None and running is not None
        rig.scheduler.execute(running)
        rig.scheduler.execute(first)
        await settle()
        assert high.done() and normal.done() and not low.done()
        np.testing.assert_array_equal(rig.servable.batches[1], np.concatenate([rows(1, 3), rows(1, 2)]))

    run(scenario())


def test_a_priority_beyond_the_models_levels_is_invalid() -> None:
    async def scenario() -> None:
        rig = Rig(priority_levels=2)
        with pytest.raises(InvalidArgument, match="Priority level 3 is out of range"):
            await rig.batcher.predict(DEFAULT_SIGNATURE, {"x": rows(1)}, request_options=RequestOptions(3))
        ignored = Rig()  # no levels: priorities are ignored
        task = ignored.send(rows(1), request_options=RequestOptions(priority=7))
        await settle()
        ignored.scheduler.run_ready()
        await settle()
        assert task.done()

    run(scenario())


# ---- errors ------------------------------------------------------------------------------------


def test_outputs_that_are_not_batch_major_fail_every_request_with_tf_servings_messages() -> None:
    async def scenario() -> None:
        for transform, message in (
            (
                lambda x: {"y": x[:1]},
                "Batched output tensor's 0th dimension does not equal the sum of the "
                "0th dimension sizes of the input tensors",
            ),
            (lambda x: {"y": np.float32(x.sum())}, "Batched output tensor has 0 dimensions"),
        ):
            rig = Rig()
            rig.servable.transform = transform
            tasks = [rig.send(rows(1)), rig.send(rows(1))]
            await settle()
            rig.scheduler.run_ready()
            await settle()
            for task in tasks:
                with pytest.raises(FailedPrecondition) as caught:
                    task.result()
                assert caught.value.message == message

    run(scenario())


def test_a_platform_error_reaches_every_request_of_the_batch() -> None:
    async def scenario() -> None:
        rig = Rig()
        rig.servable.fail = InvalidArgument("bad feed")
        tasks = [rig.send(rows(1)), rig.send(rows(2))]
        await settle()
        rig.scheduler.run_ready()
        await settle()
        for task in tasks:
            with pytest.raises(InvalidArgument, match="bad feed"):
                task.result()
        assert rig.stats[0].ok is False

    run(scenario())


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"x": np.float32(1)}, "Batching session Run() input tensors must have at least one dimension"),
        ({"x": rows(1), "w": rows(2)}, "Batching session Run() input tensors must have equal 0th-dimension size"),
    ],
)
def test_inputs_without_a_common_batch_dimension_are_refused(inputs: dict[str, Any], message: str) -> None:
    async def scenario() -> None:
        rig = Rig()
        with pytest.raises(InvalidArgument) as caught:
            await rig.batcher.predict(DEFAULT_SIGNATURE, inputs)
        assert caught.value.message == message

    run(scenario())


# ---- the shared scheduler ---------------------------------------------------------------------


def test_queues_of_different_models_take_turns() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        scheduler = BatchScheduler(0, clock=clock)
        a, b = Rows(), Rows()
        batcher_a = Batcher(scheduler, a, params(batch_timeout_micros=0, max_batch_size=1), "a", 1)
        batcher_b = Batcher(scheduler, b, params(batch_timeout_micros=0, max_batch_size=1), "b", 1)
        order: list[str] = []
        sent = [
            asyncio.ensure_future(batcher.predict(DEFAULT_SIGNATURE, {"x": rows(1)}))
            for _ in range(3)
            for batcher in (batcher_a, batcher_b)
        ]
        await settle()
        while (batch := scheduler.step()) is not None:
            order.append(batch.queue.model)
            scheduler.execute(batch)
        assert order == ["a", "b", "a", "b", "a", "b"]
        await settle()
        assert all(task.done() for task in sent)

    run(scenario())


class Gate(Rows):
    """A platform whose calls block until the test opens the gate; it counts calls running at once."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Semaphore(0)
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def predict(
        self, signature: str, inputs: Mapping[str, np.ndarray], output_filter: Collection[str] = ()
    ) -> dict[str, np.ndarray]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        self.entered.release()
        self.gate.wait(30)
        with self.lock:
            self.running -= 1
        return super().predict(signature, inputs, output_filter)


def test_batches_of_different_models_run_concurrently_up_to_num_batch_threads() -> None:
    scheduler = BatchScheduler(2)
    gate = Gate()  # shared by three models: counts batches running at once
    batchers = [Batcher(scheduler, gate, params(batch_timeout_micros=0), name, 1) for name in "abc"]
    results: list[Any] = [None] * 3

    def call(i: int) -> None:
        results[i] = run_inline(batchers[i].predict(DEFAULT_SIGNATURE, {"x": rows(1, i)}))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    assert gate.entered.acquire(timeout=30) and gate.entered.acquire(timeout=30)
    assert gate.running == 2  # the third waits for a free batch thread
    gate.gate.set()
    for t in threads:
        t.join(30)
    scheduler.close()
    assert gate.most == 2
    for i in range(3):
        assert_outputs(results[i], rows(1, i))


def test_a_batch_thread_leaves_the_other_idle_instances_share_to_a_second_thread() -> None:
    scheduler = BatchScheduler(2)
    gate = Gate()
    gate.instance_count = 2  # type: ignore[attr-defined]  # what modelserve.execution.instances exposes
    batcher = Batcher(scheduler, gate, params(batch_timeout_micros=60_000_000), "m", 1)
    gate.gate.set()
    x = rows(8, 0)
    # One 8-row request runs alone: from now on an instance's share of the load is 4 rows.
    assert_outputs(run_inline(batcher.predict(DEFAULT_SIGNATURE, {"x": x})), x)
    assert gate.entered.acquire(timeout=30)
    gate.gate.clear()
    results: list[Any] = [None] * 4

    def call(i: int) -> None:
        results[i] = run_inline(batcher.predict(DEFAULT_SIGNATURE, {"x": rows(1, 10 * i)}))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    # The fourth row makes a batch due; the thread that takes it leaves half for the other.
    assert gate.entered.acquire(timeout=30) and gate.entered.acquire(timeout=30)
    assert gate.running == 2
    gate.gate.set()
    for t in threads:
        t.join(30)
    scheduler.close()
    assert gate.sizes == [8, 2, 2]
    for i in range(4):
        assert_outputs(results[i], rows(1, 10 * i))


def test_predict_blocking_times_out_in_the_queue_like_predict() -> None:
    scheduler = BatchScheduler(1)
    gate = Gate()
    batcher = Batcher(scheduler, gate, params(batch_timeout_micros=0, max_batch_size=1), "m", 1)
    first = threading.Thread(target=lambda: run_inline(batcher.predict(DEFAULT_SIGNATURE, {"x": rows(1)})))
    first.start()
    assert gate.entered.acquire(timeout=30)
    with pytest.raises(ResourceExhausted, match=re.escape(QUEUE_TIMEOUT_MESSAGE)):
        run_inline(batcher.predict(DEFAULT_SIGNATURE, {"x": rows(1)}, request_options=RequestOptions(0, 0.001)))
    gate.gate.set()
    first.join(30)
    scheduler.close()


def test_many_concurrent_requests_each_get_exactly_their_rows() -> None:
    """Real threads and event loops: every request's outputs are what it would get alone."""
    scheduler = BatchScheduler(2)
    servable = Rows()
    batcher = Batcher(scheduler, servable, params(max_batch_size=16, max_enqueued_batches=100), "m", 1)
    errors: list[BaseException] = []

    async def client(seed: int) -> None:
        for i in range(20):
            x = rows(1 + (seed + i) % 3, start=seed * 1000 + i * 10)
            assert_outputs(await batcher.predict(DEFAULT_SIGNATURE, {"x": x}), x)

    def loop_thread(seeds: range) -> None:
        async def main() -> None:
            await asyncio.gather(*(client(s) for s in seeds))

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=loop_thread, args=(range(k * 8, k * 8 + 8),)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    scheduler.close()
    assert not errors, errors
    assert sum(servable.sizes) == sum(1 + (s + i) % 3 for s in range(24) for i in range(20))
    assert max(servable.sizes) > 1  # requests did share batches


def test_a_closed_scheduler_runs_what_still_waits_without_waiting_for_timeouts() -> None:
    async def scenario() -> None:
        rig = Rig(batch_timeout_micros=60_000_000)
        rig.send(rows(1))
        await settle()
        running = rig.scheduler.step()
        waiting = rig.send(rows(1, 5))
        await settle()
        assert running is not None and rig.scheduler.step() is None
        rig.scheduler.close()
        rig.scheduler.execute(running)
        assert rig.scheduler.run_ready() == 1
        await settle()
        assert_outputs(waiting.result(), rows(1, 5))

    run(scenario())


def test_a_merged_batch_is_charged_to_the_server_budget_while_it_runs() -> None:
    """The concatenated copy is extra memory: over a full server budget its requests get RESOURCE_EXHAUSTED."""
    from modelserve.budget import MemoryBudget

    async def scenario() -> None:
        rig = Rig()
        memory = MemoryBudget(total=1000, per_request=1000)
        rig.scheduler = BatchScheduler(0, clock=rig.clock, metrics=rig, budget=memory)
        rig.batcher = Batcher(rig.scheduler, rig.servable, params(), "m", 1)
        small = [rig.send(rows(1, 0)), rig.send(rows(1, 100))]  # 2 rows x 3 floats: 24 bytes merged
        await settle()
        assert rig.scheduler.run_ready() == 1
        await settle()
        assert [t.result()["y"].shape for t in small] == [(1, 3), (1, 3)] and memory.used == 0
        big = [rig.send(rows(4, 0, width=40)), rig.send(rows(4, 100, width=40))]  # 8 x 40 floats: 1280 bytes
        await settle()
        assert rig.scheduler.run_ready() == 1
        await settle()
        for task in big:
            with pytest.raises(ResourceExhausted, match="Server memory budget is full: merge a batch needs 1280"):
                task.result()
        assert memory.used == 0

    run(scenario())
