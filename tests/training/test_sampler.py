"""Tests for hf_taskgroup.training.sampler: task probabilities, schedules, reproducibility, single-task batches, DDP slices."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader, TensorDataset

from hf_taskgroup.training.sampler import MultiTaskBatchSampler, TaskSampling, task_probabilities

STRATEGIES = [s.value for s in TaskSampling]


def task_of(sampler: MultiTaskBatchSampler, index: int) -> int:
    """The task whose offset range holds a global index."""
    return int(np.searchsorted(sampler.offsets, index, side="right") - 1)


# --------------------------------------------------------------------------- task_probabilities


def test_probabilities_proportional_and_uniform():
    assert task_probabilities([1, 3], "proportional") == pytest.approx([0.25, 0.75])
    assert task_probabilities([1, 3, 6], TaskSampling.UNIFORM) == pytest.approx([1 / 3] * 3)
    assert task_probabilities([1, 3], "round_robin") == pytest.approx([0.5, 0.5])


def test_probabilities_temperature():
    assert task_probabilities([100, 400], "temperature", temperature=2.0) == pytest.approx([1 / 3, 2 / 3])
    assert task_probabilities([100, 400], "temperature", temperature=1.0) == pytest.approx([0.2, 0.8])
    assert task_probabilities([100, 400], "temperature", temperature=1e6) == pytest.approx([0.5, 0.5], abs=1e-5)


def test_probabilities_temperature_is_stable_for_huge_sizes():
    p = task_probabilities([10**12, 10**15], "temperature", temperature=0.05)
    assert np.all(np.isfinite(p)) and p.sum() == pytest.approx(1.0)
    assert p[1] == pytest.approx(1.0)


def test_probabilities_errors():
    with pytest.raises(ValueError, match=r"dataset_sizes\[1\] = 0"):
        task_probabilities([5, 0], "proportional")
    with pytest.raises(ValueError, match="temperature must be"):
        task_probabilities([5, 5], "temperature", temperature=0.0)
    with pytest.raises(ValueError, match="proportional, temperature, round_robin, uniform"):
        task_probabilities([5, 5], "annealed")
    with pytest.raises(ValueError, match="at least one task"):
        task_probabilities([], "uniform")


def test_strategy_accepts_enum_and_case_insensitive_string():
    assert TaskSampling.parse("Round_Robin") is TaskSampling.ROUND_ROBIN
    assert MultiTaskBatchSampler([4], 2, strategy=TaskSampling.UNIFORM).strategy is TaskSampling.UNIFORM


# --------------------------------------------------------------------------- schedules


def test_temperature_schedule_frequencies_match_probabilities():
    sampler = MultiTaskBatchSampler([100, 400], batch_size=8, strategy="temperature", temperature=2.0,
                                    num_steps=20_000)
    counts = np.bincount(sampler.task_schedule(), minlength=2) / 20_000
    assert counts == pytest.approx([1 / 3, 2 / 3], abs=0.02)


def test_uniform_schedule_frequencies():
    sampler = MultiTaskBatchSampler([10, 1000, 50], batch_size=4, strategy="uniform", num_steps=15_000)
    counts = np.bincount(sampler.task_schedule(), minlength=3) / 15_000
    assert counts == pytest.approx([1 / 3] * 3, abs=0.02)


def test_proportional_schedule_has_exact_batch_counts():
    sampler = MultiTaskBatchSampler([10, 25, 7], batch_size=4, strategy="proportional")
    assert sampler.batches_per_task == [3, 7, 2]
    assert len(sampler) == 12
    assert Counter(sampler.task_schedule()) == {0: 3, 1: 7, 2: 2}


def test_proportional_schedule_is_shuffled():
    schedule = MultiTaskBatchSampler([40, 40], batch_size=1).task_schedule()
    assert schedule != sorted(schedule)


def test_proportional_with_num_steps_repeats_exact_cycles():
    sampler = MultiTaskBatchSampler([10, 25, 7], batch_size=4, num_steps=24)
    assert Counter(sampler.task_schedule()) == {0: 6, 1: 14, 2: 4}


def test_round_robin_cycles_in_order():
    sampler = MultiTaskBatchSampler([5, 30, 3], batch_size=2, strategy="round_robin")
    assert len(sampler) == 3 + 15 + 2
    assert sampler.task_schedule() == [i % 3 for i in range(20)]


def test_drop_last_uses_floor_and_full_batches():
    sampler = MultiTaskBatchSampler([10, 25], batch_size=4, drop_last=True)
    assert sampler.batches_per_task == [2, 6]
    batches = list(sampler)
    assert len(batches) == 8 and all(len(b) == 4 for b in batches)


# --------------------------------------------------------------------------- iteration


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_batch_holds_one_task_matching_the_schedule(strategy):
    sampler = MultiTaskBatchSampler([13, 40, 6], batch_size=4, strategy=strategy, temperature=3.0, seed=1)
    batches = list(sampler)
    for task, batch in zip(sampler.task_schedule(), batches, strict=True):
        assert batch, "empty batch"
        assert {task_of(sampler, i) for i in batch} == {task}


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("drop_last", "num_steps"), [(False, None), (True, None), (False, 17)])
def test_len_matches_iteration(strategy, drop_last, num_steps):
    sampler = MultiTaskBatchSampler([13, 40, 9], batch_size=4, strategy=strategy, drop_last=drop_last,
                                    num_steps=num_steps)
    assert len(list(sampler)) == len(sampler) == len(sampler.task_schedule())
    if num_steps is not None:
        assert len(sampler) == num_steps


def test_proportional_visits_every_example_exactly_once():
    sizes = [13, 40, 6]
    sampler = MultiTaskBatchSampler(sizes, batch_size=4, seed=3)
    seen = [i for batch in sampler for i in batch]
    assert sorted(seen) == list(range(sum(sizes)))


def test_exhausted_task_reshuffles_and_continues():
    # task 0 has 2 batches per pass but round robin gives it 11 steps: each pass covers its 4 examples
    sampler = MultiTaskBatchSampler([4, 40], batch_size=2, strategy="round_robin")
    task0 = [b for b in sampler if task_of(sampler, b[0]) == 0]
    assert len(task0) == 11
    passes = [sorted(task0[k] + task0[k + 1]) for k in range(0, 10, 2)]
    assert all(p == [0, 1, 2, 3] for p in passes)
    assert len({tuple(task0[k] + task0[k + 1]) for k in range(0, 10, 2)}) > 1  # passes are reshuffled


def test_works_as_dataloader_batch_sampler():
    datasets = [TensorDataset(torch.full((n,), float(t))) for t, n in enumerate([7, 12, 5])]
    sampler = MultiTaskBatchSampler([len(d) for d in datasets], batch_size=3, strategy="temperature", temperature=2.0)
    loader = DataLoader(ConcatDataset(datasets), batch_sampler=sampler)
    tasks = [batch[0].unique().tolist() for batch in loader]
    assert tasks == [[float(t)] for t in sampler.task_schedule()]


# --------------------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_arguments_same_batches(strategy):
    make = lambda: MultiTaskBatchSampler([13, 40, 6], batch_size=4, strategy=strategy, seed=7)  # noqa: E731
    assert list(make()) == list(make())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_other_seed_or_epoch_changes_order(strategy):
    base = MultiTaskBatchSampler([13, 40, 6], batch_size=4, strategy=strategy, seed=7)
    first = list(base)
    assert list(MultiTaskBatchSampler([13, 40, 6], batch_size=4, strategy=strategy, seed=8)) != first
    base.set_epoch(1)
    assert list(base) != first
    base.set_epoch(0)
    assert list(base) == first


def test_task_schedule_changes_with_epoch():
    sampler = MultiTaskBatchSampler([50, 50], batch_size=2, strategy="temperature", temperature=2.0)
    epoch0 = sampler.task_schedule()
    sampler.set_epoch(1)
    assert sampler.task_schedule() != epoch0


# --------------------------------------------------------------------------- DDP


def ranks(sizes, batch_size, world, **kwargs):
    return [MultiTaskBatchSampler(sizes, batch_size=batch_size, num_replicas=world, rank=r, **kwargs)
            for r in range(world)]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_ddp_ranks_share_schedule_and_get_disjoint_same_task_slices(strategy):
    samplers = ranks([13, 40, 6], 3, 2, strategy=strategy, seed=5)
    assert samplers[0].task_schedule() == samplers[1].task_schedule()
    assert len(samplers[0]) == len(samplers[1])
    for task, b0, b1 in zip(samplers[0].task_schedule(), *samplers, strict=True):
        assert b0 and b1
        assert not set(b0) & set(b1)
        assert {task_of(samplers[0], i) for i in b0 + b1} == {task}


def test_ddp_rank_slices_are_positions_of_the_global_batch():
    # with one process and batch_size = 2 * 3 the sampler yields the global batches themselves
    global_batches = list(MultiTaskBatchSampler([22, 34], batch_size=6, seed=2))
    per_rank = [list(s) for s in ranks([22, 34], 2, 3, seed=2)]
    assert sorted(len(g) for g in global_batches)[:2] == [4, 4]  # each task ends with a partial batch of 4
    for step, g in enumerate(global_batches):
        if len(g) == 6:
            assert [per_rank[r][step] for r in range(3)] == [g[0:2], g[2:4], g[4:6]]
        else:  # a partial global batch is split into contiguous, near-even pieces
            assert sum((per_rank[r][step] for r in range(3)), []) == g
            sizes = [len(per_rank[r][step]) for r in range(3)]
            assert max(sizes) - min(sizes) <= 1


def test_ddp_covers_every_example_once_without_padding():
    sizes = [10, 7]  # global batch 4: partial batches of 2 and 3 elements, at least one per rank
    samplers = ranks(sizes, 2, 2)
    seen = [i for s in samplers for batch in s for i in batch]
    assert sorted(seen) == list(range(sum(sizes)))


def test_ddp_pads_a_tiny_partial_batch_so_no_rank_is_empty():
    # 9 examples, global batch 8: the last global batch has 1 example for 2 ranks -> padded by wrap-around
    samplers = ranks([9], 4, 2)
    last = [list(s)[-1] for s in samplers]
    assert all(len(b) == 1 for b in last)
    assert last[0] != last[1]
    first_global = list(samplers[0])[0] + list(samplers[1])[0]
    assert last[1][0] == first_global[0]  # the pad is the first example of the pass's permutation


def test_ddp_task_smaller_than_world_size_still_gives_every_rank_an_example():
    samplers = ranks([1, 20], 1, 3)
    for batches in zip(*samplers, strict=True):
        assert all(len(b) >= 1 for b in batches)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [(dict(batch_size=0), "batch_size must be an integer >= 1"),
     (dict(dataset_sizes=[5, 0, 3]), r"dataset_sizes\[1\] = 0"),
     (dict(temperature=-1.0), "temperature must be"),
     (dict(rank=2, num_replicas=2), r"rank must be an integer in \[0, num_replicas=2\)"),
     (dict(strategy="annealed"), "expected one of proportional, temperature, round_robin, uniform"),
     (dict(num_steps=0), "num_steps must be None or an integer >= 1"),
     (dict(seed=-1), "seed must be an integer >= 0"),
     (dict(dataset_sizes=[100, 3], drop_last=True), r"task\(s\) \[1\] \(sizes \[3\]\).*never be trained")],
)
def test_invalid_arguments(kwargs, message):
    args = dict(dataset_sizes=[10, 20], batch_size=4) | kwargs
    with pytest.raises(ValueError, match=message):
        MultiTaskBatchSampler(**args)


def test_set_epoch_rejects_negative():
    with pytest.raises(ValueError, match="epoch must be"):
        MultiTaskBatchSampler([4], 2).set_epoch(-1)
