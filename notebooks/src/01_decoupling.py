# Source of notebooks/01_decoupling.ipynb (percent format; build with `python scripts/make_notebooks.py`).

# %% [markdown]
# # 01 · SFT and RL do not decouple
#
# **Question.** A model is first fine-tuned on demonstrations (SFT), then trained with reinforcement
# learning (RL) on a reward. Can we think of the two stages separately, "SFT teaches the format, RL
# polishes the reward"? This notebook shows, on the smallest possible example, that the answer is
# *no*: RL from the SFT optimum always *raises* the SFT loss (T1), and SFT after RL always gives back
# reward when the data is not reward-optimal (T2).
#
# **Setting: a 3-answer bandit.** One prompt, three possible answers $y \in \{A, B, C\}$. A policy is
# a softmax over logits $z$: $\pi = \mathrm{softmax}(z)$. The demonstrations come from a data
# distribution $p$ (what SFT imitates); the reward $r(y) \in \{0, 1\}$ says which answers are correct.
# Everything below is *exact*: no sampling, just closed forms (`theory.bandit`) and gradient flows run
# on the exact objectives (`toybench.tabular.dynamics`, which calls the losses of `toybench.losses`).
#
# You only need softmax and cross-entropy. RL here is plain gradient ascent on the expected reward
# $J(\pi) = \sum_y \pi(y) r(y)$.

# %% [markdown]
# ## Key equations
#
# * SFT loss (population cross-entropy) splits into an entropy and a KL:
# $$L_{\mathrm{SFT}}(\pi) = \mathbb{E}_{y\sim p}[-\log \pi(y)] = H(p) + \mathrm{KL}(p \,\|\, \pi),$$
# so its minimum is $H(p)$, reached exactly at $\pi = p$.
# * Exact softmax policy gradient (the RL direction in logits): $\nabla_z J = \pi \odot (r - J(\pi))$.
# * **T1 (SFT then RL).** Along the RL gradient flow $\dot z = \nabla_z J$ started at $\pi = p$:
# $\frac{dL}{dt}\big|_{0} = 0$ and
# $$L(t) - H(p) = \tfrac{t^2}{2}\,\mathrm{Var}_{y\sim p}\big[p(y)\,(r(y) - \mathbb{E}_p r)\big] + O(t^3).$$
# Away from the optimum: $\frac{dL}{dt} = \mathrm{Cov}_{y\sim\pi}\big(\pi(y) - p(y),\ r(y)\big)$.
# * KL-regularised RL from $p$ reaches $\pi^\star \propto p\, e^{\lambda r}$. With the cumulant
# $K(\lambda) = \log \mathbb{E}_p e^{\lambda (r - \mathbb{E}_p r)}$:
# $$\Delta L_{\mathrm{SFT}} = K(\lambda), \qquad \Delta J = K'(\lambda), \qquad
# \Delta L_{\mathrm{SFT}} \approx \frac{\Delta J^2}{2\,\mathrm{Var}_p r}.$$
# * **T2 (RL then SFT).** SFT to convergence sends any $\pi$ to $p$, so the reward drops from
# $J(\pi_{\mathrm{RL}})$ to $J(p)$; at $\pi_{\mathrm{RL}} = \pi^\star$ the drop is $K'(\lambda)$.
#
# Source: Niu, Bai, Han, Zhang, *On the Non-decoupling of SFT and RL in Post-training*
# (arXiv 2601.07389); the forms above are derived in `docs/methods.md` §4 and checked here.

# %%
import matplotlib.pyplot as plt
import numpy as np
import sympy as sp
import torch
from IPython.display import Math, display

from theory import bandit as tb
from theory import symbolic
from toybench.tabular import dynamics as dyn

torch.set_num_threads(1)
np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## The bandit
#
# The demonstrator is imperfect: it gives the correct answer A most of the time, the wrong answer B
# 30% of the time, and the other correct answer C rarely.

# %%
answers = ["A", "B", "C"]
p = np.array([0.6, 0.3, 0.1])  # SFT data distribution
r = np.array([1.0, 0.0, 1.0])  # reward: A and C are correct
P, R = torch.tensor(p)[None], torch.tensor(r)[None]  # (I=1, V) for toybench.tabular.dynamics
print(f"H(p) = {tb.entropy(p):.4f}   J(p) = {tb.expected_reward(p, r):.3f}   Var_p r = {p @ r**2 - (p @ r)**2:.3f}")

# %% [markdown]
# ### $L_{\mathrm{SFT}} = H(p) + \mathrm{KL}(p\|\pi)$, checked two ways
#
# `theory.bandit.sft_loss` is the numpy closed form; `toybench.tabular.dynamics.sft_population_loss` averages the
# torch per-token `toybench.losses.sft_loss` over the data. Both must agree with $H(p) + \mathrm{KL}$ for
# random policies.

# %%
rng = np.random.default_rng(0)
z_random = rng.normal(size=(5, 3))  # five random policies
pi_random = tb.softmax(z_random)
closed = tb.sft_loss(p, pi_random)
split = tb.entropy(p) + tb.kl(p, pi_random)
torch_loss = dyn.sft_population_loss(torch.tensor(z_random)[:, None, :], P.expand(5, -1)).numpy()
print(np.c_[closed, split, torch_loss])
assert np.allclose(closed, split) and np.allclose(closed, torch_loss)

# %% [markdown]
# ## T1: RL from the SFT optimum raises the SFT loss
#
# Start at the SFT optimum $z_0 = \log p$ and follow the exact policy gradient with small Euler steps
# (`dyn.run` on `dyn.pg_surrogate`, whose gradient is $-\nabla_z J$). Record the SFT loss and the reward.

# %%
lr, steps = 0.02, 250  # flow time t = steps * lr = 5
record = lambda z: torch.stack([dyn.sft_population_loss(z, P), dyn.expected_return(z, R)], -1)
z0 = torch.log(P)[:, None, :]  # (I=1, N=1, V=3): the bandit is the tree with one node
_, hist = dyn.run(z0, lambda z: dyn.pg_surrogate(z, R), steps=steps, lr=lr, record=record)
t = np.arange(steps + 1) * lr
L_rl, J_rl = hist[:, 0, 0].numpy(), hist[:, 0, 1].numpy()
curv = tb.sft_loss_curvature_at_optimum(p, r)  # Var_p[p (r - E_p r)]

fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
ax[0].plot(t, L_rl - tb.entropy(p), label="simulated  $L(t) - H(p)$")
ax[0].plot(t, t**2 / 2 * curv, "--", label=r"second-order law $\frac{t^2}{2}\mathrm{Var}_p[p(r-\bar r)]$")
ax[0].set(xlabel="RL flow time t", ylabel="rise of the SFT loss (nats)", ylim=(0, 1.5 * (L_rl[-1] - tb.entropy(p))))
ax[0].legend()
ax[1].plot(t, J_rl, color="C2", label="reward J")
ax[1].set(xlabel="RL flow time t", ylabel="J(pi)")
ax[1].legend()
plt.tight_layout()
print(f"dL/dt at t=0: {tb.sft_loss_rate_under_rl(p, p, r):.2e}   curvature: {curv:.4f}")
print(f"t = 0.5: simulated {L_rl[25] - tb.entropy(p):.5f}  vs law {0.5**2 / 2 * curv:.5f}")

# %% [markdown]
# **What to notice.** The loss starts flat (zero slope: $\pi = p$ is a minimum) and then rises, exactly
# along the parabola for small $t$. Reward goes up while the SFT loss goes up: the two objectives pull
# in different directions as soon as the data puts mass on a wrong answer (B). Later the parabola
# overshoots, because the flow slows down once $\pi(B)$ is small (the $O(t^3)$ term).

# %% [markdown]
# ### The exact trade-off at the KL-regularised optimum
#
# KL-regularised RL with reference $p$ stops at $\pi^\star \propto p\,e^{\lambda r}$
# (`tb.kl_regularised_optimum` with $\beta = 1/\lambda$). The SFT loss it pays and the reward it gains are
# both given by one function, the cumulant $K$: check it, then plot the trade-off.

# %%
lams = np.linspace(0.0, 4.0, 41)
pi_star = np.stack([tb.kl_regularised_optimum(p, r, 1 / lam) if lam > 0 else p for lam in lams])
dL, dJ = tb.cumulant(p, r, lams), tb.cumulant_grad(p, r, lams)
assert np.allclose(dL, tb.sft_loss(p, pi_star) - tb.entropy(p))
assert np.allclose(dJ, tb.expected_reward(pi_star, r) - tb.expected_reward(p, r))
var_r = p @ r**2 - (p @ r) ** 2

plt.figure(figsize=(5, 3.5))
plt.plot(dJ, dL, label=r"exact: $(K'(\lambda), K(\lambda))$")
plt.plot(dJ, dJ**2 / (2 * var_r), "--", label=r"$\Delta J^2 / (2\,\mathrm{Var}_p r)$")
plt.xlabel("reward gained by RL  $\\Delta J$")
plt.ylabel("SFT loss paid  $\\Delta L_{SFT}$")
plt.legend()
plt.tight_layout()

# %% [markdown]
# **What to notice.** No free lunch: every bit of reward RL gains costs SFT loss, quadratically for small
# gains. The only way to pay nothing is a reward that is constant on the data's support.

# %% [markdown]
# ### Away from the optimum: the threshold
#
# From a checkpoint $\pi \neq p$ the rate is $\frac{dL}{dt} = \mathrm{Cov}_{\pi}(\pi - p, r)$, which can be
# negative: RL can *lower* the SFT loss of a bad checkpoint. The map below shows the sign over the whole
# simplex of policies (axes: $\pi(A)$ and $\pi(C)$; $\pi(B) = 1 - \pi(A) - \pi(C)$).

# %%
g = np.linspace(0.005, 0.995, 199)
piA, piC = np.meshgrid(g, g)
piB = 1 - piA - piC
inside = piB > 0.005
pi_grid = np.stack([piA, np.where(inside, piB, 1 / 3), piC], -1)
pi_grid = pi_grid / pi_grid.sum(-1, keepdims=True)
rate = np.where(inside, tb.sft_loss_rate_under_rl(pi_grid, p, r), np.nan)

plt.figure(figsize=(5, 4))
lim = np.nanmax(np.abs(rate))
plt.contourf(piA, piC, rate, levels=21, cmap="RdBu_r", vmin=-lim, vmax=lim)
plt.colorbar(label="dL_SFT/dt under RL")
plt.contour(piA, piC, rate, levels=[0.0], colors="k")
plt.plot(p[0], p[2], "k*", ms=12, label="SFT optimum p")
plt.xlabel("pi(A)")
plt.ylabel("pi(C)")
plt.legend(loc="upper right")
plt.tight_layout()

# %% [markdown]
# **What to notice.** Red: RL raises the SFT loss; blue: RL lowers it. The black curve (rate = 0) passes
# through $p$: near the SFT optimum RL always hurts SFT, but a checkpoint that puts too much mass on the
# wrong answer B (bottom-left) is improved by RL on *both* objectives.

# %% [markdown]
# ## T2: SFT after RL gives back reward
#
# Start from the RL solution $\pi^\star$ at $\lambda = 2$ and run population SFT (gradient descent on
# `dyn.sft_population_loss`). SFT converges to $p$, so the reward must fall to $J(p)$, losing exactly
# $K'(\lambda)$.

# %%
lam = 2.0
pi_rl = tb.kl_regularised_optimum(p, r, 1 / lam)
z_rl = torch.log(torch.tensor(pi_rl))[None, None, :]
_, hist_sft = dyn.run(z_rl, lambda z: dyn.sft_population_loss(z, P), steps=300, lr=0.1, record=record)
J_sft = hist_sft[:, 0, 1].numpy()
drop = J_sft[0] - J_sft[-1]
print(f"J(pi_RL) = {J_sft[0]:.4f} -> after SFT {J_sft[-1]:.4f};  drop {drop:.4f}  vs K'(lam) = {tb.cumulant_grad(p, r, lam):.4f}")
assert abs(drop - tb.cumulant_grad(p, r, lam)) < 1e-3

plt.figure(figsize=(5, 3.5))
plt.plot(np.arange(len(J_sft)) * 0.1, J_sft, label="reward during SFT")
plt.axhline(tb.expected_reward(p, r), ls="--", color="k", label="J(p)")
plt.xlabel("SFT flow time")
plt.ylabel("J(pi)")
plt.legend()
plt.tight_layout()

# %% [markdown]
# ### The v1 counterexample
#
# The paper's first version stated that "a KL band between the RL and SFT policies implies a strict
# reward drop". It does not: take a constant reward $r \equiv 0$, $\pi_{\mathrm{ref}} = \pi_{\mathrm{RL}} =
# (\frac12, \frac12)$ and $\pi_{\mathrm{SFT}} = (\frac34, \frac14)$. The KL lies inside the band
# $[0.1, 0.2]$, and nothing can drop because every policy has reward 0.

# %%
r0 = np.zeros(2)
pi_ref, pi_sft = np.array([0.5, 0.5]), np.array([0.75, 0.25])
kl_exact = symbolic.counterexample_kl()
display(Math(r"\mathrm{KL}(\pi_{SFT}\|\pi_{ref}) = " + sp.latex(kl_exact) + f" = {float(kl_exact):.6f}"))
print("inside [0.1, 0.2]:", 0.1 <= tb.kl(pi_sft, pi_ref) <= 0.2)
print("reward drop:", tb.expected_reward(pi_ref, r0) - tb.expected_reward(pi_sft, r0))

# %% [markdown]
# ## The derivation, done by sympy
#
# `theory.symbolic` writes the SFT loss and the reward from their definitions, differentiates the loss
# twice along the RL flow ($\frac{d^2}{dt^2}L = \nabla(\nabla L\cdot G)\cdot G$, $G = \nabla_z J$), puts
# $z = \log p$, and simplifies the difference to the claimed variance. Here with $V = 2$ answers:

# %%
d = symbolic.sft_curvature_at_optimum(2)
display(Math(r"\text{claimed: } " + sp.latex(sp.factor(d.claimed))))
display(Math(r"\text{derived} - \text{claimed} = " + sp.latex(d.residual)))
print("proved symbolically:", d.proved)
# the lambdified expressions agree with the numpy closed form on our bandit as well
assert np.isclose(symbolic.sft_curvature_at_optimum(3).derived_fn(p, r), curv)

# %% [markdown]
# ## Exercises
#
# **1.** Add a constant $c$ to the reward. Predict what happens to the curvature and to $K(\lambda)$,
# then check.
#
# <details><summary>Answer</summary>
#
# Nothing changes: both depend on $r - \mathbb{E}_p r$ only, and the policy gradient
# $\pi(r - J)$ is invariant too. RL cares about reward *differences*. The cell below checks it.
# </details>

# %%
assert np.isclose(tb.sft_loss_curvature_at_optimum(p, r + 5.0), curv)
assert np.allclose(tb.cumulant(p, r + 5.0, lams), dL)

# %% [markdown]
# **2.** Find a checkpoint from which RL *lowers* the SFT loss (use the map above), and check the sign of
# `tb.sft_loss_rate_under_rl`.
#
# <details><summary>Answer</summary>
#
# Any policy that over-weights the wrong answer B, e.g. $\pi = (0.1, 0.8, 0.1)$: RL moves mass from B to
# A and C, towards $p$, so the KL to $p$ shrinks. The rate is negative.
# </details>

# %%
assert tb.sft_loss_rate_under_rl(np.array([0.1, 0.8, 0.1]), p, r) < 0

# %% [markdown]
# **3.** How good is the quadratic law $\Delta L \approx \Delta J^2/(2\mathrm{Var}_p r)$ at $\lambda = 0.5$
# and at $\lambda = 4$?
#
# <details><summary>Answer</summary>
#
# The law is only the second order of the cumulant expansion,
# $K(\lambda) = \frac{\lambda^2}{2}\mathrm{Var}_p r + \frac{\lambda^3}{6}\kappa_3 + \dots$, and
# $K'^2/(2\mathrm{Var}_p r) = \frac{\lambda^2}{2}\mathrm{Var}_p r + \frac{\lambda^3}{2}\kappa_3 + \dots$:
# they differ at third order, by the skewness $\kappa_3$ of $r$ under $p$. Here $r$ is skewed
# ($p(r = 0) = 0.3$), so the error is already visible at $\lambda = 0.5$ (about 15%) and large at
# $\lambda = 4$, where the law underestimates the SFT loss several-fold.
# </details>

# %%
for lam_ in (0.5, 4.0):
    K, Kp = tb.cumulant(p, r, lam_), tb.cumulant_grad(p, r, lam_)
    print(f"lam = {lam_}: K = {K:.4f}, law = {Kp**2 / (2 * var_r):.4f}, rel. error {abs(Kp**2 / (2 * var_r) / K - 1):.1%}")
