"""Figures of benchmarks/bench_fluid.py computed as the README and the JSON name them (audit)."""

from __future__ import annotations

import pytest

from conftest import load_benchmark  # a benchmark script loaded as a module


@pytest.fixture(scope="module")
def bf():
    return load_benchmark("bench_fluid.py")


def test_the_per_launch_cost_leaves_a_one_off_compile_out(bf, monkeypatch):
    """The 16^2 per-launch cost (per_launch_us_16, and through it every row's overhead_share_est)
    came from the first block of 50 steps after 3 warm-up steps, the block in which the
    ``residual`` kernel is first launched and compiled (step 8): one such block read 606 us per
    launch where the blocks after it read 134-142 us. A block charged with a one-off cost must
    not set the figure."""
    # step time, launches per step: the first block pays a 0.1 s compile over 50 steps
    blocks = iter([(0.1 / 50 + 7e-4, 7.0), (7e-4, 7.0), (7.2e-4, 7.0), (6.9e-4, 7.0), (7.1e-4, 7.0),
                   (7e-4, 7.0), (3e-3, 7.0)])

    def fake_timed_steps(solver, state, steps, corrector=None):
        t, launches = next(blocks)
        return t, launches, 3.0, {}, 0.5

    monkeypatch.setattr(bf, "_timed_steps", fake_timed_steps)
    per_launch, kept = bf.per_launch_cost(None, None, steps=50, rounds=5)
    assert len(kept) == 5
    assert per_launch == pytest.approx(7.0e-4 / 7.0)          # the median of the kept blocks
    assert per_launch < 2 * 7.2e-4 / 7.0                       # not the compile-laden first block


def test_the_poisson_anchor_names_the_threads_lawful_ran_on(bf):
    """lawful_threads was os.cpu_count(), but a grid of at most serial_cells() cells runs its loops
    serialized on the calling thread: the committed 128^2 anchor ran lawful on one thread (like
    the peers) and said 2."""
    pytest.importorskip("scipy")
    from lawful.kernels.mac_grid import serial_grid
    from lawful.kernels.runtime import taichi_cpu_threads

    out = bf.poisson_anchor(32)
    assert out["lawful_threads"] == (1 if serial_grid(32, 32) else taichi_cpu_threads())
    assert out["lawful_serialized"] == serial_grid(32, 32)
    # the peers are held to the residual lawful reached, in the anchor's own definition
    assert out["scipy_cg_ilu"]["achieved_rel_l2"] <= 1.01 * out["relative_l2_residual"]


def test_taichi_one_pass_times_real_passes_and_names_the_best_loop(bf):
    """The speed table's one-pass ceiling: both Taichi loops compute y = a x on every grid (a
    non-square one too), and the best figure is the larger of the two."""
    rows = bf.taichi_one_pass((16, 24), repeat=1, block_s=0.001)
    assert set(rows) == {"16", "24"}
    for row in rows.values():
        speeds = {k: row[f"{k}_gbytes_per_s"] for k in ("serialized", "parallel")}
        assert all(v > 0 for v in speeds.values())
        assert row["best_gbytes_per_s"] == max(speeds.values())
        assert row["best_loop"] == max(speeds, key=speeds.get)


def test_taichi_one_pass_refuses_a_kernel_that_skips_its_work(bf, monkeypatch):
    """A pass that did not write y = a x would time less than the work and flatter the ceiling."""
    kernels = dict(bf._one_pass_kernels())
    kernels["parallel"] = lambda x, y, a: None
    monkeypatch.setattr(bf, "_ONE_PASS_KERNELS", kernels)
    with pytest.raises(RuntimeError, match="parallel one-pass kernel at 16"):
        bf.taichi_one_pass((16,), repeat=1, block_s=0.001)
