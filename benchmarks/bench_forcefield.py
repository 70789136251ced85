"""Force-field benchmark: train on EMT copper, report accuracy, time energy+forces against EMT.

1. Reference data (lawful.forcefields.reference): 32-atom fcc Cu cells labelled by ASE's EMT -
   Langevin MD snapshots at 300/600/900/1200 K, rattled and strained cells - for training (with
   a 10 % validation split) and an independently seeded test set.
2. Trains NeuralPotential (conservative) and DirectForceModel (non-conservative control) with the
   same budget (epochs, wall-time cap, optimiser, data) and reports validation and test energy
   MAE per atom and force MAE.
3. Times energy + forces on a 500-atom Cu cell (5x5x5 conventional cells, rattled) for the models
   and for ASE's EMT side by side in this run, under the same thread setting
   (torch.set_num_threads(1); EMT is numpy), as wall time and as CPU time (process_time: robust
   when the shared machine is loaded), two ways:
     * "fresh": a new structure every call (neighbour list built from scratch for both);
     * "md":    the MD situation - a small move since the last call, EMT reusing its neighbour list
                and the model a kernels.neighbors.VerletList (skin 0.5 Å).
4. A second MLIP as a peer: E+F of an untrained MACE model of similar size (2 interactions,
   8x0e+8x1o, l_max 2, r_max 4.5 Å, ~24k parameters; cu-emt has ~12k) on the same 500-atom cell,
   float64 and float32, one thread, beside cu-emt: "fresh" (graph built by MACE's own data path
   every call) and "prebuilt" (the graph / pairs built once). Weights do not change the cost.
   Needs ``pip install 'lawful[bench]'`` (mace-torch); without it the MACE figures are None.
5. Saves both trained models into the package, forcefields/pretrained/cu-emt{,-direct}.lawful
   (``load_model("cu-emt")``); their training-data fingerprint must match what
   ``emt_metal_dataset`` generates at HEAD (tests/test_reference_data.py checks it).

LAWFUL_BENCH_QUICK=1: small data, a few epochs, models saved under the results folder instead.
LAWFUL_BENCH_TINY=1: the smallest data and one epoch (CI smoke, not a result).
Every figure comes from this run: there is no timing-only rerun merged into older accuracy figures.
LAWFUL_BENCH_FF_EPOCHS: the training budget, equal for both models (default 100 epochs, with early
stopping); LAWFUL_BENCH_FF_MAX_TIME: a wall-time safety cap per model in seconds (default 2400).
The budget is counted in epochs, not seconds, because this machine is shared: wall time depends on
the load, and the CPU time each training used is reported (``*_train_cpu_s``).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lawful.forcefields import DirectForceModel, NeuralPotential, load_model, train
from lawful.forcefields.reference import emt_metal_dataset
from lawful.forcefields.training import evaluate_errors, prepare
from lawful.integrations.benchmarking import (default_results_dir, quick_requested, replace_model_file,
                                              tiny_requested, time_call, write_result)
from lawful.kernels.neighbors import VerletList

THREADS = 1
QUICK, TINY = quick_requested(), tiny_requested()
HERE = Path(__file__).resolve().parent
#: The trained models ship in the package (lawful.forcefields.pretrained): load_model("cu-emt").
PRETRAINED = Path(__import__("lawful.forcefields.shipped", fromlist=["_DIR"])._DIR)
FILES = {"conservative": "cu-emt.lawful", "direct": "cu-emt-direct.lawful"}


def _data():
    if TINY:
        return (emt_metal_dataset("Cu", 1, temperatures=(600,), n_md=4, n_rattled=2, n_strained=2, seed=0),
                emt_metal_dataset("Cu", 1, temperatures=(600,), n_md=2, n_rattled=1, n_strained=1, seed=100))
    if QUICK:
        return (emt_metal_dataset("Cu", 2, n_md=6, n_rattled=6, n_strained=6, seed=0),
                emt_metal_dataset("Cu", 2, n_md=3, n_rattled=4, n_strained=4, seed=100))
    return (emt_metal_dataset("Cu", 2, n_md=50, n_rattled=40, n_strained=50, seed=0),
            emt_metal_dataset("Cu", 2, n_md=10, n_rattled=10, n_strained=10, seed=100))


def _cell_500(seed=3):
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((5, 5, 5))
    atoms.rattle(0.05, seed=seed)
    return atoms


def _cpu_time(fn, repeat: int) -> float:
    """Median CPU time (time.process_time) of fn() in seconds: robust on a loaded shared machine."""
    fn()
    samples = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        samples.append(time.process_time() - t0)
    return float(np.median(samples))


def _timings(models: dict, repeat: int) -> dict:
    from ase.calculators.calculator import all_changes
    from ase.calculators.emt import EMT

    atoms = _cell_500()
    rng = np.random.default_rng(0)
    out = {}
    # EMT, fresh: all_changes makes EMT re-initialise (new neighbour list).
    calc = EMT()
    atoms.calc = calc
    emt_fresh = lambda: calc.calculate(atoms, ["energy", "forces"], all_changes)  # noqa: E731
    out["emt_fresh_s"] = time_call(emt_fresh, repeat)["median_s"]
    out["emt_fresh_cpu_s"] = _cpu_time(emt_fresh, repeat)

    def emt_md():
        atoms.positions += rng.normal(0, 0.002, atoms.positions.shape)
        calc.calculate(atoms, ["energy", "forces"], ["positions"])

    out["emt_md_s"] = time_call(emt_md, repeat)["median_s"]
    out["emt_md_cpu_s"] = _cpu_time(emt_md, repeat)
    pos0 = atoms.positions.copy()
    cell = np.asarray(atoms.cell[:])
    for name, model in models.items():
        pos = torch.tensor(pos0, dtype=model.dtype)
        c = torch.tensor(cell, dtype=model.dtype)
        num = torch.tensor(atoms.numbers)
        fresh = lambda: model.evaluate(pos, num, c, True)  # noqa: E731
        out[f"{name}_fresh_s"] = time_call(fresh, repeat)["median_s"]
        out[f"{name}_fresh_cpu_s"] = _cpu_time(fresh, repeat)
        fixed = VerletList(model.cutoff, skin=0.0).get(pos, c, True)
        prebuilt = lambda: model.evaluate(pos, num, c, True, pairs=(fixed.i, fixed.j, fixed.shifts))  # noqa: E731
        out[f"{name}_prebuilt_cpu_s"] = _cpu_time(prebuilt, repeat)
        vl = VerletList(model.cutoff, skin=0.5)
        state = {"pos": pos.clone()}
        gen = torch.Generator().manual_seed(1)

        def md():
            state["pos"] = state["pos"] + 0.002 * torch.randn(state["pos"].shape, generator=gen, dtype=model.dtype)
            nl = vl.get(state["pos"], c, True)
            model.evaluate(state["pos"], num, c, True, pairs=(nl.i, nl.j, nl.shifts))

        out[f"{name}_md_s"] = time_call(md, repeat)["median_s"]
        out[f"{name}_md_cpu_s"] = _cpu_time(md, repeat)
        out[f"{name}_md_cpu_over_emt_md_cpu_ratio"] = out[f"{name}_md_cpu_s"] / out["emt_md_cpu_s"]
        out[f"{name}_fresh_cpu_over_emt_fresh_cpu_ratio"] = out[f"{name}_fresh_cpu_s"] / out["emt_fresh_cpu_s"]
        out[f"{name}_md_verlet_rebuilds"] = vl.rebuilds
        out[f"{name}_md_over_emt_md_ratio"] = out[f"{name}_md_s"] / out["emt_md_s"]
        out[f"{name}_fresh_over_emt_fresh_ratio"] = out[f"{name}_fresh_s"] / out["emt_fresh_s"]
    return out


def _mace_model(dtype):
    """An untrained MACE of about cu-emt's size for Cu (None when mace-torch is not installed)."""
    try:
        import mace  # noqa: F401  (before e3nn: mace configures it on import)
        from e3nn import o3
        from mace import modules
    except ImportError:
        return None
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
        model = modules.MACE(r_max=4.5, num_bessel=8, num_polynomial_cutoff=5, max_ell=2, interaction_cls=block,
                             interaction_cls_first=block, num_interactions=2, num_elements=1,
                             hidden_irreps=o3.Irreps("8x0e+8x1o"), MLP_irreps=o3.Irreps("16x0e"),
                             atomic_energies=np.array([0.0]), avg_num_neighbors=40.0, atomic_numbers=[29],
                             correlation=2, gate=torch.nn.functional.silu)
    finally:
        torch.set_default_dtype(old)
    return model.to(dtype)


def _mace_timings(repeat: int) -> dict:
    """CPU time of MACE E+F on the 500-atom cell, float64 and float32: ``fresh`` (MACE's data path
    builds the graph every call) and ``prebuilt`` (one graph reused)."""
    import warnings

    out = {"mace_parameters": None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dtype, tag in ((torch.float64, "f64"), (torch.float32, "f32")):
            model = _mace_model(dtype)
            if model is None:
                return out
            from mace import data as mdata
            from mace import tools
            from mace.tools import torch_geometric

            atoms = _cell_500()
            table = tools.AtomicNumberTable([29])

            def graph():
                item = mdata.AtomicData.from_config(mdata.config_from_atoms(atoms), z_table=table, cutoff=4.5)
                batch = next(iter(torch_geometric.dataloader.DataLoader([item], batch_size=1))).to_dict()
                return {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v
                        for k, v in batch.items()}

            g = graph()
            out["mace_parameters"] = sum(p.numel() for p in model.parameters())
            out[f"mace_{tag}_fresh_cpu_s"] = _cpu_time(lambda: model(graph(), compute_force=True), repeat)
            out[f"mace_{tag}_prebuilt_cpu_s"] = _cpu_time(lambda: model(g, compute_force=True), repeat)
    return out


def main() -> int:
    torch.set_num_threads(THREADS)
    t0 = time.perf_counter()
    train_frames, test_frames = _data()
    t_data = time.perf_counter() - t0
    model_dir = (default_results_dir() / "quick_models") if QUICK else PRETRAINED
    model_dir.mkdir(parents=True, exist_ok=True)
    max_time = float(os.environ.get("LAWFUL_BENCH_FF_MAX_TIME", 60.0 if QUICK else 2400.0))
    epochs = int(os.environ.get("LAWFUL_BENCH_FF_EPOCHS", 1 if TINY else 6 if QUICK else 100))
    budget = dict(epochs=epochs, max_time=max_time, batch_size=8, lr=3e-3,
                  lr_patience=6, patience=25, energy_weight=1.0, force_weight=1.0, seed=0)
    arch = dict(cutoff=4.5, n_basis=8, n_radial=8, lmax=3, hidden=(64, 64))
    figures: dict = {"n_train_frames": len(train_frames), "n_test_frames": len(test_frames),
                     "atoms_per_frame": len(train_frames[0]), "data_generation_s": t_data}
    models = {}
    for name, cls, extra in (("conservative", NeuralPotential, {}),
                             ("direct", DirectForceModel, dict(embed=32, force_hidden=(64, 64)))):
        model = cls(["Cu"], **arch, **extra, seed=0)
        with tempfile.TemporaryDirectory() as tmp:
            summary = train(model, train_frames, checkpoint=Path(tmp) / "ckpt.pt", progress=sys.stderr.isatty(),
                            **budget)
        test = evaluate_errors(model, prepare(model, test_frames))
        summary["test_energy_mae_per_atom_eV"] = test["energy_mae_per_atom"]
        summary["test_force_mae_eV_per_A"] = test["force_mae"]
        path = model_dir / FILES[name]
        figures[f"{name}_model_file"] = replace_model_file(
            lambda p: model.save(p, training_summary={k: v for k, v in summary.items() if k != "history"}), path)
        reloaded = load_model(path)
        n_params = sum(p.numel() for p in model.parameters())
        figures.update({
            f"{name}_val_energy_mae_meV_per_atom": 1e3 * summary["val_energy_mae_per_atom_eV"],
            f"{name}_val_force_mae_meV_per_A": 1e3 * summary["val_force_mae_eV_per_A"],
            f"{name}_test_energy_mae_meV_per_atom": 1e3 * test["energy_mae_per_atom"],
            f"{name}_test_force_mae_meV_per_A": 1e3 * test["force_mae"],
            f"{name}_val_stress_mae_meV_per_A3": 1e3 * (summary["val_stress_mae_eV_per_A3"] or float("nan")),
            f"{name}_epochs": summary["epochs_run"], f"{name}_stop_reason": summary["stop_reason"],
            f"{name}_train_time_s": summary["train_time_s"], f"{name}_train_cpu_s": summary["train_cpu_s"],
            f"{name}_parameters": n_params,
            f"{name}_file_bytes": path.stat().st_size, f"{name}_file": str(path.relative_to(HERE.parent))
            if not QUICK else str(path),
        })
        models[name] = reloaded
        print(f"[{name}] val E MAE {figures[f'{name}_val_energy_mae_meV_per_atom']:.2f} meV/atom, "
              f"F MAE {figures[f'{name}_val_force_mae_meV_per_A']:.1f} meV/A; test E "
              f"{figures[f'{name}_test_energy_mae_meV_per_atom']:.2f}, F {figures[f'{name}_test_force_mae_meV_per_A']:.1f}; "
              f"{summary['epochs_run']} epochs in {summary['train_time_s']:.0f} s", flush=True)
    f32 = load_model(model_dir / FILES["conservative"], dtype="float32")
    repeat = 1 if TINY else 3 if QUICK else 7
    timing = _timings({"conservative": models["conservative"], "conservative_f32": f32,
                       "direct": models["direct"]}, repeat=repeat)
    timing.update(_mace_timings(repeat))
    if timing.get("mace_parameters"):
        for tag, ours in (("f64", "conservative"), ("f32", "conservative_f32")):
            for path_ in ("fresh", "prebuilt"):
                timing[f"mace_{tag}_{path_}_over_{ours}_{path_}_cpu_ratio"] = (
                    timing[f"mace_{tag}_{path_}_cpu_s"] / timing[f"{ours}_{path_}_cpu_s"])
    figures.update(timing)
    figures["torch_threads"] = THREADS
    figures["targets"] = {"force_mae_meV_per_A": 30.0, "energy_mae_meV_per_atom": 2.0,
                          "model_md_time_le_emt_md_time": True}
    print({k: v for k, v in timing.items()}, flush=True)
    path = write_result("forcefield", figures, dtype="float64 (and float32 timing)", device="cpu",
                        params={"quick": QUICK, "train": budget, "architecture": arch, "torch_threads": THREADS,
                                "timing_cell": "fcc Cu 5x5x5 conventional, 500 atoms, a=3.6 A, rattled 0.05 A",
                                "mace_peer": "untrained MACE, 2 interactions, 8x0e+8x1o, l_max 2, correlation 2, "
                                             "r_max 4.5 A (RealAgnosticResidualInteractionBlock)",
                                "data": {"train": "emt_metal_dataset('Cu', 2, n_md=50, n_rattled=40, n_strained=50, "
                                                  "seed=0)", "test": "same sizes / 5, seed=100"}},
                        seeds=[0, 100, 3])
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
