"""Running the map: one scenario per setting holding every cell x seed, every family x configuration
run once on it (vectorised), the records of ``results.csv`` and ``escape.csv``."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from toybench import analysis
from toybench.methods import Method
from toybench.report.config import RL_ALGORITHMS, ReportConfig, rl_variants, tuning_grid
from toybench.tabular.bandit import MultiAnswerBandit, SharedBandit
from toybench.tabular.envs import Scenario
from toybench.tabular.pipeline import run_method
from toybench.tabular.tree import ReasoningTree, SharedTree


def _builder(setting: str):
    return {"bandit": MultiAnswerBandit, "bandit_shared": SharedBandit, "tree_shared": SharedTree}.get(
        setting, ReasoningTree
    )


def make_scenario(
    cfg: ReportConfig,
    setting: str,
    seeds: list[int],
    wrong_demo_frac: float = 0.2,
    base_correct_mass: float = 0.1,
) -> Scenario:
    """Build one setting for the given seeds at one cell of the map (other knobs from the config)."""
    cls = _builder(setting)
    data = dict(
        wrong_demo_frac=wrong_demo_frac,
        base_correct_mass=base_correct_mass,
        demos_per_prompt=cfg.demos_per_prompt,
        error_unit=cfg.error_unit,
    )
    if setting == "bandit":
        return cls(seeds, cfg.bandit_prompts, cfg.bandit_V, cfg.bandit_correct, **data)
    if setting == "bandit_shared":
        return cls(seeds, cfg.shared_prompts, cfg.shared_prompts // 2, cfg.shared_V, cfg.shared_d, **data)
    if setting == "tree_shared":
        n = cfg.shared_tree_prompts
        return cls(seeds, n, n // 2, cfg.tree_V, cfg.tree_H, **data)
    source = "behavior" if setting == "tree_offpolicy" else "expert"
    return cls(seeds, cfg.tree_prompts, cfg.tree_V, cfg.tree_H, data_source=source, **data)


def concat_scenarios(scs: list[Scenario]) -> Scenario:
    """One scenario whose seeds are those of ``scs`` in order (same geometry and prompt split), so one
    vectorised run covers every cell of the map. Per-seed tensors are concatenated along dim 0."""
    first = scs[0]
    out = {}
    for f in dataclasses.fields(first):
        vals = [getattr(s, f.name) for s in scs]
        v0 = vals[0]
        if isinstance(v0, torch.Tensor) and f.name.endswith("prompts"):  # shared across seeds
            if not all(torch.equal(v, v0) for v in vals):
                raise ValueError(f"concat_scenarios: {f.name} differs between scenarios")
            out[f.name] = v0
        elif isinstance(v0, torch.Tensor) and v0.dim() > 0 and v0.shape[0] == first.num_seeds:
            out[f.name] = torch.cat(vals)
        else:
            out[f.name] = v0
    return Scenario(**out)


def map_cells(cfg: ReportConfig, setting: str) -> list[tuple[float, float]]:
    """(wrong_demo_frac, base_correct_mass) of every cell of ``setting`` (every builder takes both)."""
    return [(w, m) for w in cfg.wrong_demo_fracs for m in cfg.base_correct_masses]


def held_out_metrics(d: pd.DataFrame) -> pd.DataFrame:
    """Where the run has held-out eval prompts (``eval_<metric>`` columns, shared parameters), make the
    held-out values THE metrics (``J``, ``pass@k``, ...) and keep the RL-training-prompt values as
    ``train_<metric>``; ``eval_prompts`` says which prompts the metrics are on ('held-out' | 'rl_train')."""
    ev = [c for c in d.columns if c.startswith("eval_")]
    if not ev:
        return d.assign(eval_prompts="rl_train")
    names = [c.removeprefix("eval_") for c in ev]
    train = d[names].rename(columns=lambda c: f"train_{c}")
    d = d.drop(columns=ev).assign(**{n: d[f"eval_{n}"].to_numpy() for n in names})
    return pd.concat([d, train], axis=1).assign(eval_prompts="held-out")


def _jobs(cfg: ReportConfig, setting: str) -> list[tuple[str, Method, list[tuple[int, float, float]]]]:
    """(family, spec, [(config_id, sft_lr, rl_lr), ...]): the configurations of one spec run together."""
    out = {}
    for fam, cs in tuning_grid(cfg, setting).items():
        for cid, (spec, sft_lr, rl_lr) in enumerate(cs):
            out.setdefault((fam, spec), []).append((cid, sft_lr, rl_lr))
    return [(fam, spec, c) for (fam, spec), c in out.items()]


_META = ("method", "kind", "value", "seed", "stage", "step", "global_step", "pear_degenerate")


#: relative float-level perturbation of the step sizes on the stability copies of the validation seeds
PERTURBATION = 1e-6


def _run_configs(
    sc, spec, pipe, configs, cfg: ReportConfig, streams, scale
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One run of ``spec`` holding every configuration (seed index = config x n + seed of ``sc``).

    ``streams`` ([n] ints): the rollout stream of each seed of ``sc`` (its seed number), the same in every
    configuration and every method (common random numbers); ``scale`` ([n]): each seed's factor on both
    step sizes (1, or 1 + PERTURBATION on the stability copies).

    A configuration whose learning rate makes the run non-finite (a ValueError from the metrics) is
    DIVERGED: the configurations are then rerun one by one, and a diverged one gets NaN metrics and
    ``diverged = True`` (selection never picks it, ``analysis.select_configs``)."""
    n, steps = sc.num_seeds, {"sft": {pipe.sft_steps}, "rl": set(cfg.rl_budgets)}

    def run(scenario, cs):
        lrs = torch.tensor([c[1:] for c in cs]).repeat_interleave(n, 0) * scale.repeat(len(cs))[:, None]
        df = run_method(
            scenario,
            spec,
            pipe,
            escape_threshold=cfg.reward_threshold,
            sft_lrs=lrs[:, 0],
            rl_lrs=lrs[:, 1],
            record_steps=steps,
            rollout_seeds=streams.repeat(len(cs)),
        )
        esc = df.attrs.pop("escape")
        return df.assign(diverged=False), esc

    try:
        return run(concat_scenarios([sc] * len(configs)), configs)
    except ValueError as err:
        if "NaN" not in str(err):
            raise
    runs = []
    for c in configs:
        try:
            runs.append(run(sc, [c]))
        except ValueError as err:
            if "NaN" not in str(err):
                raise
            runs.append(None)
    ok = next((r for r in runs if r is not None), None)
    if ok is None:
        raise ValueError(
            f"every configuration of {spec} diverged (non-finite metrics): lower the learning rates"
        )
    dfs, escs = [], []
    for i, r in enumerate(runs):
        df, esc = r if r is not None else ok
        if r is None:
            df = df.assign(diverged=True)
            df[[c for c in df.columns if c not in (*_META, "diverged")]] = np.nan
            esc = esc.assign(initial=np.nan, steps=np.nan, reached=False)
        dfs.append(df.assign(seed=df["seed"] + i * n))
        escs.append(esc.assign(seed=esc["seed"] + i * n))
    return pd.concat(dfs, ignore_index=True), pd.concat(escs, ignore_index=True)


def _label(frame: pd.DataFrame, n: int, S: int, n_val: int, seeds, cl, configs, **const) -> None:
    """Give one run's rows (seed index = config x n + cell x S + seed) their cell, split, seed number and
    configuration columns, in place; ``const``: columns with one value for the whole run."""
    idx = frame["seed"].to_numpy()
    conf, idx = idx // n, idx % n
    frame["wrong_demo_frac"] = [cl[i // S][0] for i in idx]
    frame["base_correct_mass"] = [cl[i // S][1] for i in idx]
    frame["split"] = np.select([idx % S < n_val, idx % S < S - n_val], ["val", "test"], "val_perturbed")
    frame["seed"] = [seeds[i % S] for i in idx]
    for k, v in const.items():
        frame[k] = v
    frame["config_id"] = [configs[c][0] for c in conf]
    frame["sft_lr"] = [configs[c][1] for c in conf]
    frame["rl_lr"] = [configs[c][2] for c in conf]


def map_seeds(cfg: ReportConfig) -> list[int]:
    """The seed numbers of every cell, in order: validation seeds, test seeds, then the validation seeds
    again (their stability copies, run with step sizes x (1 + ``PERTURBATION``))."""
    n_val = cfg.val_seeds
    return list(range(cfg.seed, cfg.seed + n_val + cfg.seeds)) + list(range(cfg.seed, cfg.seed + n_val))


#: A job of the map: (setting, RL algorithm label, G, family, method, [(config_id, sft_lr, rl_lr), ...]).
Job = tuple[str, str, int, str, Method, list[tuple[int, float, float]]]

#: per process: the config and the scenarios built so far (one per setting, every cell x seed)
_WORKER: dict = {}


def _init_worker(cfg: ReportConfig, parent: int | None = None) -> None:
    if parent is not None:  # a worker process of ``parent``
        _exit_with_parent(parent)
    torch.set_num_threads(1)  # see run_report: small tensors, one thread per process
    torch.manual_seed(cfg.seed)  # nothing draws from the global generator; set for safety
    _WORKER.clear()
    _WORKER.update(cfg=cfg, scenarios={})


def _exit_with_parent(parent: int) -> None:
    """Linux: have the kernel send this worker SIGTERM when its parent process dies (killed, not only
    interrupted), so that no orphan keeps computing a map nobody reads; a parent already gone (it died
    while this worker was starting) ends the worker at once."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux/glibc: workers end when the pool is shut down
        pass
    if os.getppid() != parent:
        os._exit(1)


def _scenario(cfg: ReportConfig, setting: str) -> tuple[Scenario, list[tuple[float, float]]]:
    cache = _WORKER.setdefault("scenarios", {})
    if setting not in cache:
        cells = map_cells(cfg, setting)
        sc = concat_scenarios([make_scenario(cfg, setting, map_seeds(cfg), w, m) for w, m in cells])
        cache[setting] = (sc, cells)
    return cache[setting]


def run_job(job: Job) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One method spec with its configurations on one setting under one RL stage (the worker's config):
    its rows of results.csv and escape.csv."""
    cfg: ReportConfig = _WORKER["cfg"]
    setting, algo, G, fam, spec, configs = job
    sc, cl = _scenario(cfg, setting)
    seeds, n_val = map_seeds(cfg), cfg.val_seeds
    S, n = len(seeds), sc.num_seeds  # n = cells x S
    pipe = dataclasses.replace(cfg.pipeline, **RL_ALGORITHMS[algo], num_generations=max(G, 2))
    if fam == "sft_early":
        pipe = dataclasses.replace(pipe, sft_steps=cfg.sft_early_steps)
    streams = torch.tensor([seeds[i % S] for i in range(n)])
    scale = torch.tensor([1 + PERTURBATION if i % S >= S - n_val else 1.0 for i in range(n)])
    df, esc = _run_configs(sc, spec, pipe, configs, cfg, streams, scale)
    end_sft = df[(df["stage"] == "sft") & (df["step"] == pipe.sft_steps)]
    parts = []
    for b in cfg.rl_budgets:
        parts += [
            end_sft.assign(rl_steps=b),
            df[(df["stage"] == "rl") & (df["step"] == b)].assign(rl_steps=b),
        ]
    d = held_out_metrics(pd.concat(parts, ignore_index=True))
    const = dict(
        setting=setting,
        rl_algorithm=algo,
        num_generations=G,
        family=fam,
        method=str(spec),
        sft_steps=pipe.sft_steps,
    )
    for frame in (d, esc):
        _label(frame, n, S, n_val, seeds, cl, configs, **const)
    d["samples"] = d["rl_steps"] * G * len(sc.rl_prompts) if G else np.inf
    return d, esc.assign(rl_steps=max(cfg.rl_budgets))


def map_workers(cfg: ReportConfig, jobs: int) -> int:
    """Worker processes for ``jobs`` jobs: ``cfg.workers``, or (0) one per CPU this process may use."""
    n = cfg.workers
    if n == 0:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(n, jobs))


def run_jobs(
    cfg: ReportConfig, jobs: list[Job], desc: str = "map"
) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """Every job's (rows, escape rows), in the order of ``jobs``, whatever the number of workers: each
    job's result depends on the job alone (its seeds and rollout streams are fixed by the config), so a
    run on W processes is byte-identical to a run in this process."""
    W = map_workers(cfg, len(jobs))
    bar = tqdm(total=len(jobs), desc=desc, unit="run")
    if W == 1:
        _init_worker(cfg)
        out = []
        for job in jobs:
            out.append(run_job(job))
            bar.update()
        bar.close()
        return out
    results: list = [None] * len(jobs)
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that has run torch (OpenMP)
    ex = ProcessPoolExecutor(W, mp_context=ctx, initializer=_init_worker, initargs=(cfg, os.getpid()))
    try:
        # the heaviest first (the trees, the most configurations), so no long job starts last
        order = sorted(
            range(len(jobs)), key=lambda i: (jobs[i][0].startswith("tree"), len(jobs[i][5])), reverse=True
        )
        futures = {ex.submit(run_job, jobs[i]): i for i in order}
        for f in as_completed(futures):
            results[futures[f]] = f.result()
            bar.update()
    except BaseException:  # an error or Ctrl-C: drop the queued jobs, end the workers, re-raise
        ex.shutdown(wait=False, cancel_futures=True)
        for p in list(getattr(ex, "_processes", {}).values()):
            p.terminate()
        raise
    ex.shutdown()
    bar.close()
    return results


def map_jobs(cfg: ReportConfig) -> list[Job]:
    """Every (setting, RL variant, family, spec) of the map with its configurations."""
    return [(s, *v, *job) for s in cfg.settings for v in rl_variants(cfg) for job in _jobs(cfg, s)]


def run_map(cfg: ReportConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every family x configuration on every setting and RL stage, vectorised over configurations x cells
    x seeds, the jobs spread over ``cfg.workers`` processes; then the RL step-size grid extended where
    selection sits on its edge (:func:`extension_jobs`, at most ``cfg.rl_lr_extensions`` rounds).

    The configurations of one method spec differ only in their learning rates, so they run as one batch
    (the scenario repeated once per configuration, each copy with its own step sizes). The RL axis
    (``rl_variants``: sampled GRPO at each G, exact PG) runs each spec once per variant; a seed's GRPO
    rollouts come from its own stream (its seed number), the same for every method and configuration.
    Returns the map frame (results.csv: one row per setting x RL variant x cell x RL budget x
    configuration x seed x stage, stage 'sft' = end of SFT, 'rl' = end of the budget, with the budget in
    samples) and the per-prompt RL escape times of the longest budget (escape.csv).
    """
    jobs = map_jobs(cfg)
    done = run_jobs(cfg, jobs)
    for r in range(cfg.rl_lr_extensions):
        df = pd.concat([d for d, _ in done], ignore_index=True)
        new = extension_jobs(cfg, df, jobs)
        if not new:
            break
        done += run_jobs(cfg, new, desc=f"map: RL grid extension {r + 1}")
        jobs += new
    return _assemble([d for d, _ in done], [e for _, e in done])


def extension_jobs(cfg: ReportConfig, df: pd.DataFrame, jobs: list[Job]) -> list[Job]:
    """One round of the RL step-size grid's extension, decided on validation rows alone (``df``'s test
    rows are dropped first, so no test seed steers the grid): in each map
    (setting x RL variant) and family whose selection, in any cell, sits on the grid's high (low) edge
    and beats its neighbour inside the grid (``select_configs``' ``rl_edge``), every SFT configuration
    of the family gets the next step size beyond it (the grid's largest x its ratio ``rl_lrs[-1] /
    rl_lrs[-2]``, or its smallest / ``rl_lrs[1] / rl_lrs[0]``), as new configurations (config ids after
    the family's last)."""
    val = df[df["split"] != "test"]
    if len(cfg.rl_lrs) < 3 or not len(val):
        return []
    sel = analysis.select_configs(val, "J", cfg.stability_tol, cfg.selection_tie)
    up, down = cfg.rl_lrs[-1] / cfg.rl_lrs[-2], cfg.rl_lrs[1] / cfg.rl_lrs[0]
    new = []
    for (setting, algo, G, fam), g in sel.groupby(["setting", "rl_algorithm", "num_generations", "family"]):
        mine = [j for j in jobs if j[:4] == (setting, algo, G, fam)]
        grid = sorted({c[2] for j in mine for c in j[5]})
        edges = set(g["rl_edge"])
        values = [grid[-1] * up] * ("high" in edges) + [grid[0] / down] * ("low" in edges)
        if not values:
            continue
        next_id = 1 + max(c[0] for j in mine for c in j[5])
        specs: dict = {}  # spec -> its SFT learning rates, in order (NaN for none)
        for j in mine:
            lrs = specs.setdefault(j[4], [])
            for c in j[5]:
                if not any(c[1] == x or (np.isnan(c[1]) and np.isnan(x)) for x in lrs):
                    lrs.append(c[1])
        for spec, sfts in specs.items():
            configs = [
                (next_id + i, lr, v) for i, (v, lr) in enumerate((v, lr) for v in values for lr in sfts)
            ]
            next_id += len(configs)
            new.append((setting, algo, G, fam, spec, configs))
    return new


def _assemble(frames: list[pd.DataFrame], escapes: list[pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    out, esc = pd.concat(frames, ignore_index=True), pd.concat(escapes, ignore_index=True)
    front = [
        *analysis.CELL,
        "samples",
        "family",
        "method",
        "config_id",
        "sft_lr",
        "rl_lr",
        "split",
        "seed",
        "stage",
        "step",
    ]
    out = out[front + [c for c in out.columns if c not in front]]
    return out, esc.astype({"base_correct_mass": float})
