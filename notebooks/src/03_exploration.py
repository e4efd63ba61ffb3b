# Source of notebooks/03_exploration.ipynb (percent format; build with `python scripts/make_notebooks.py`).

# %% [markdown]
# # 03 · Exploration: entropy-regularised SFT vs CurioSFT
#
# **Background.** RL can only reinforce answers the model actually produces. If SFT collapses the policy
# onto the demonstrated answer, RL has little to explore, and when that answer is wrong it must climb out of
# a long plateau (T5). Two fixes keep entropy during SFT:
#
# * **Entropy-regularised SFT** adds a bonus $\lambda H(\pi)$ to the cross-entropy. Entropy over the *full*
# vocabulary does not care *which* answers get the mass: it flattens towards uniform, including onto
# implausible answers.
# * **CurioSFT** (arXiv 2602.02244, code `HaoooWang/CurioSFT`) distils from a slowly moving (EMA) copy of the
# model itself at a temperature chosen per token from the teacher's entropy: the mass it keeps off the
# demonstration goes where the model already finds answers plausible.
#
# This notebook looks at the mechanism of each loss, at where the mass goes on a multi-answer bandit
# (`toybench.tabular.MultiAnswerBandit` run through `toybench.tabular.pipeline`), and at what it does to the RL stage
# (the entropy law T3 and the escape time T5).

# %% [markdown]
# ## Key equations
#
# * Entropy-regularised SFT: $\ell_t = -\log\pi(y_t) - \lambda H(\pi_t)$, with $\partial H/\partial z_k = -\pi_k(\log\pi_k + H)$.
# * CurioSFT, with the EMA teacher's logits $\bar z_t$ and $q_t = \mathrm{softmax}(\bar z_t/\tau_t)$ (no gradient):
# $$\ell_t = -\log\pi(y_t) + \tfrac{\alpha}{2}\big(\log\pi(y_t) - \mathrm{sg}[\log q_t(y_t)]\big)^2,
# \qquad \nabla_z\ell_t = w_t(\pi_t - e_{y_t}),\quad w_t = 1 - \alpha\big(\log\pi(y_t) - \log q_t(y_t)\big).$$
# Once the model is more confident than its hotter teacher, $w_t < 1$: the push towards one-hot weakens.
# * Entropy-guided temperature: $H^\star_t = H_t + 0.5\,\sigma\big(2(H_t - 1.2)\big)$, and $\tau_t \in [1.1, 1.5]$ solves
# $H(\mathrm{softmax}(\bar z_t/\tau)) = H^\star_t$: high-entropy ("reasoning") tokens get a hotter teacher.
# * **T3** (entropy mechanism, Cui et al. 2025): a softmax PG step of size $\eta$ changes the entropy by
# $\Delta H \approx -\eta\,\mathrm{Cov}_{a\sim\pi}(\log\pi(a),\ \pi(a)A(a))$ (natural PG: $-\eta\,\mathrm{Cov}(\log\pi, A)$).
# * **T5** (escape time, Mei et al. 2020): with reward on one answer $a^\star$, the PG flow obeys
# $\dot x = \frac{V}{V-1}x^2(1-x)^2$ for $x = \pi(a^\star)$, so the time to escape grows like $1/x_0$.

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from scipy.optimize import brentq

from theory import bandit as tb
from theory import symbolic
from toybench.tabular import dynamics as dyn
from toybench import losses
from toybench.tabular import MultiAnswerBandit
from toybench.tabular.pipeline import PipelineConfig, run_method

torch.set_num_threads(1)
np.set_printoptions(precision=4, suppress=True)
pd.set_option("display.precision", 3)

# %% [markdown]
# ## The CurioSFT temperature
#
# Teachers with low entropy (a "factual" token) stay at $\tau = 1.1$; uncertain ones (a "strategy" token) are
# heated up to $1.5$. We feed `entropy_guided_temperature` teacher logits of increasing spread.

# %%
rng = np.random.default_rng(0)
scales = np.geomspace(0.05, 20.0, 60)
zbar = torch.tensor(rng.normal(size=64))[None, None, :] * torch.tensor(scales)[:, None, None]  # (60, 1, 64)
zbar = zbar.transpose(0, 1)  # (B=1, T=60, V=64): one "sequence" of 60 tokens
tau = losses.entropy_guided_temperature(zbar)[0]
H_teacher = tb.entropy(tb.softmax(zbar[0].numpy()))

plt.figure(figsize=(5, 3.5))
plt.plot(H_teacher, tau, "o-", ms=3, label=r"$\tau_t$ from entropy_guided_temperature")
plt.axvline(1.2, ls="--", color="k", label="entropy pivot 1.2 nats")
plt.xlabel("teacher entropy $H_t$ (nats)")
plt.ylabel(r"teacher temperature $\tau_t$")
plt.legend()
plt.tight_layout()

# %% [markdown]
# The CurioSFT gradient is a reweighted cross-entropy. Autograd through `losses.curio_loss` must match the
# closed form $w(\pi - e_y)$ of `theory.bandit.grad_curio`:

# %%
z = torch.tensor(rng.normal(size=(1, 5, 8)), requires_grad=True)  # (B, T, V)
y = torch.tensor(rng.integers(0, 8, size=(1, 5)))
zt = torch.tensor(rng.normal(size=(1, 5, 8)))
tau_t = losses.entropy_guided_temperature(zt)
(g,) = torch.autograd.grad(losses.curio_loss(z, y, zt, tau_t).sum(), z)
assert np.allclose(g.numpy(), tb.grad_curio(z.detach().numpy(), y.numpy(), zt.numpy(), tau_t.numpy()))
print("tau per token:", tau_t.numpy().round(3))

# %% [markdown]
# ## Where does the entropy go?
#
# A multi-answer bandit: 16 prompts, $V = 16$ answers, 3 correct per prompt, a base model with 30% of its mass on
# correct answers, and an *imperfect* teacher that is confidently wrong on ~30% of the prompts. Each method runs
# `base -> SFT (40 steps) -> exact RL (60 steps)` on 8 seeds at once; every loss comes from `toybench.losses`
# through `toybench.methods`.

# %%
sc = MultiAnswerBandit(seeds=range(8), num_prompts=16, V=16, num_correct=3, base_correct_mass=0.3,
                       wrong_demo_frac=0.3)
cfg = PipelineConfig(sft_steps=40, rl_steps=60, rl_lr=2.0)
methods = ["none", "sft", "entropy_sft@0.3", "entropy_sft@1.0", "curio", "gift@3"]
df = pd.concat([run_method(sc, m, cfg) for m in methods], ignore_index=True)
end_sft = df[(df.stage == "sft") & (df.step == cfg.sft_steps)].groupby("method", sort=False)
cols = ["J", "entropy", "coverage", "wrong_mass", "implausible_mass"]
end_sft[cols].mean()

# %%
m = end_sft[["J", "wrong_mass", "implausible_mass"]].mean()
plausible_wrong = m.wrong_mass - m.implausible_mass
plt.figure(figsize=(7, 3.5))
plt.bar(m.index, m.J, label="correct answers")
plt.bar(m.index, plausible_wrong, bottom=m.J, label="wrong, plausible under base")
plt.bar(m.index, m.implausible_mass, bottom=m.J + plausible_wrong, label="wrong, implausible under base")
plt.ylabel("probability mass after SFT")
plt.xticks(rotation=20)
plt.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
plt.tight_layout()

# %% [markdown]
# **What to notice.** The entropy bonus buys its entropy with *wrong* mass; at coefficient 1.0 more than half of
# that wrong mass sits on answers the base model itself found implausible (less likely than uniform). CurioSFT keeps almost no
# implausible mass, but in this toy its policy is nearly as sharp as plain SFT: the EMA teacher follows the
# student, so the temperature-1.1-1.5 teacher is only mildly hotter than the model.

# %% [markdown]
# ## What the RL stage makes of it
#
# Reward (= pass@1) and pass@16 during exact policy-gradient RL, from each SFT checkpoint:

# %%
rl = df[df.stage == "rl"].groupby(["method", "step"], sort=False)[["J", "pass@16"]].mean().reset_index()
fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
for name, part in rl.groupby("method", sort=False):
    ax[0].plot(part.step, part.J, label=name)
    ax[1].plot(part.step, part["pass@16"], label=name)
ax[0].set(xlabel="RL step", ylabel="J = pass@1")
ax[1].set(xlabel="RL step", ylabel="pass@16")
ax[0].legend(fontsize=8)
plt.tight_layout()
steps_to = rl[rl.J >= 0.95].groupby("method", sort=False).step.min().reindex(methods)
print("RL steps to J >= 0.95:\n", steps_to.to_string())

# %% [markdown]
# **What to notice.** Plain SFT sits on a plateau: on the prompts where the teacher was wrong it put almost all
# mass on the wrong answer, and the policy gradient on a correct answer with tiny probability is tiny (T5).
# Every method that kept some entropy escapes much sooner. *Finding:* in this toy, CurioSFT escapes later than
# entropy-regularised SFT and GIFT, because its policy after SFT is almost as collapsed as SFT's; the
# paper's advantage (better RL *after* CurioSFT) is not reproduced here. The toy has no shared structure between
# prompts and no reasoning tokens, where the entropy-guided temperature is designed to act.

# %% [markdown]
# ## T3: why RL itself eats entropy
#
# One softmax policy-gradient step $z \leftarrow z + \eta\,\pi\odot A$. The first-order prediction
# (`tb.entropy_change_pg`) against the exact change:

# %%
pi0 = np.array([0.6, 0.25, 0.1, 0.05])
r4 = np.array([1.0, 0.0, 1.0, 0.0])
A = r4 - tb.expected_reward(pi0, r4)
etas = np.linspace(0.0, 2.0, 21)
z_new = np.log(pi0) + etas[:, None] * tb.policy_gradient(pi0, r4)
exact = tb.entropy(tb.softmax(z_new)) - tb.entropy(pi0)
plt.figure(figsize=(5, 3.5))
plt.plot(etas, exact, label="exact entropy change")
first_order = etas * tb.entropy_change_pg(pi0, A, 1.0)  # linear in eta
plt.plot(etas, first_order, "--", label=r"$-\eta\,\mathrm{Cov}(\log\pi, \pi A)$")
plt.xlabel(r"step size $\eta$")
plt.ylabel(r"$\Delta H$ (nats)")
plt.legend()
plt.tight_layout()

# %% [markdown]
# **What to notice.** When the likely answers are also the rewarded ones, $\log\pi$ and $\pi A$ are positively
# correlated and every RL step lowers the entropy: RL sharpens. Entropy can only be *kept* for RL by what SFT
# leaves behind.

# %% [markdown]
# ## T5: the escape time grows like $1/\pi_0(a^\star)$
#
# Reward 1 on one answer $a^\star$, the other $V - 1 = 7$ logits equal. Simulated exact PG (`dyn.run` on
# `dyn.pg_surrogate`) against sympy's exact integral (`symbolic.escape_time`) for the time until
# $\pi(a^\star) \ge 0.9$.

# %%
V = 8
x0 = np.array([1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 0.3])
z0 = np.zeros((len(x0), 1, V))
z0[:, 0, 0] = np.log(x0 / (1 - x0) * (V - 1))  # pi(a*) = x0, the rest uniform
R = torch.zeros(len(x0), V, dtype=torch.float64)
R[:, 0] = 1.0
lr = 0.5
_, x_t = dyn.run(torch.tensor(z0), lambda z: dyn.pg_surrogate(z, R), steps=2000, lr=lr,
                 record=lambda z: torch.softmax(z[:, 0], -1)[:, 0])
t_sim = np.argmax(x_t.numpy() >= 0.9, axis=0) * lr
t_exact = symbolic.escape_time(x0, 0.9, V)
plt.figure(figsize=(5, 3.5))
plt.loglog(x0, t_exact, "-", label="exact (sympy integral)")
plt.loglog(x0, t_sim, "o", label="simulated PG")
plt.xlabel(r"initial mass on the best answer $\pi_0(a^\star)$")
plt.ylabel(r"flow time to $\pi(a^\star) \geq 0.9$")
plt.legend()
plt.tight_layout()
print(np.c_[x0, t_sim, t_exact])

# %% [markdown]
# **What to notice.** Ten times less initial mass, roughly ten times longer plateau. This is how a collapsed SFT
# checkpoint slows RL down, and why the *place* where SFT leaves its entropy matters: mass on implausible
# answers is wasted, mass on correct alternatives shortens the plateau.

# %% [markdown]
# ## Exercises
#
# **1.** Show that the single-token optimum of entropy-regularised SFT gives *every* non-demonstrated answer
# the same probability, however implausible. (Hint: set $\nabla_z\ell = 0$ for $k \ne y$.)
#
# <details><summary>Answer</summary>
#
# For $k \neq y$: $\pi_k\big(1 + \lambda(\log\pi_k + H)\big) = 0$, so $\log\pi_k = -H - 1/\lambda$ is the same for all
# $k \ne y$. The optimum is (a, b, b, ..., b) whatever the base model believed: that is the "flattening". The cell
# solves for $a$ and checks that `tb.grad_entropy_sft` vanishes there.
# </details>

# %%
coef, Vx = 0.5, 6
flat = lambda a: np.r_[a, np.full(Vx - 1, (1 - a) / (Vx - 1))]
a_star = brentq(lambda a: tb.grad_entropy_sft(np.log(flat(a)), 0, coef)[0], 1 / Vx, 1 - 1e-9)
assert np.allclose(tb.grad_entropy_sft(np.log(flat(a_star)), 0, coef), 0.0, atol=1e-9)
print(f"optimum: pi(y) = {a_star:.4f}, every other answer {(1 - a_star) / (Vx - 1):.4f}")

# %% [markdown]
# **2.** By the T5 law, how much longer does RL need from $\pi_0(a^\star) = 10^{-3}$ than from $10^{-1}$?
#
# <details><summary>Answer</summary>
#
# About 40 times here ($t \approx \frac{V-1}{V}(1/x_0 + \log(1/x_0) + \dots)$; the $1/x_0$ term dominates only for
# small $x_0$). Computed below from `symbolic.escape_time`.
# </details>

# %%
ratio = symbolic.escape_time(np.array([1e-3]), 0.9, V) / symbolic.escape_time(np.array([1e-1]), 0.9, V)
print(f"ratio of escape times: {ratio[0]:.1f}")
assert 10 < ratio[0] < 100

# %% [markdown]
# **3.** T3 says RL lowers entropy when $\mathrm{Cov}(\log\pi, \pi A) > 0$. Build a policy for which a PG step
# *raises* the entropy.
#
# <details><summary>Answer</summary>
#
# Make the rewarded answer unlikely: e.g. $\pi = (0.05, 0.9, 0.05)$ with $r = (1, 0, 0)$. The step moves mass from
# the confident wrong answer to a rare one, towards uniform; the covariance is negative.
# </details>

# %%
pi_bad = np.array([0.05, 0.9, 0.05])
r_bad = np.array([1.0, 0.0, 0.0])
assert tb.entropy_change_pg(pi_bad, r_bad - tb.expected_reward(pi_bad, r_bad), 0.1) > 0
