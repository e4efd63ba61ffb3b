# Source of notebooks/02_temperature.ipynb (percent format; build with `python scripts/make_notebooks.py`).

# %% [markdown]
# # 02 · Zero- vs finite-temperature SFT (GIFT)
#
# **Background.** Standard SFT trains towards a *one-hot* target: all probability on the demonstrated
# token $y$. Seen as a distribution over answers, that is a Gibbs distribution at **zero temperature**:
# it forgets everything the base model knew about the other answers, including other *correct* ones
# that RL could later have reinforced.
#
# GIFT (Gibbs Initialisation with Finite Temperature, arXiv 2601.09233, code `zzy1127/GIFT`) keeps a
# **finite** inverse temperature $\beta$: the target is the base model $\pi_{\mathrm{base}}$, tilted
# towards the demonstration. This notebook shows what the target looks like, how much mass it leaves to
# the alternatives, why it is the right initialisation for KL-regularised RL (T4), and what the
# token-level loss approximates on a sequence.

# %% [markdown]
# ## Key equations
#
# * Token target (computed from a frozen base copy, no gradient), and the loss (cross-entropy to it):
# $$q_t = \mathrm{softmax}\big(\log p_{\mathrm{base},t} + \beta\, e_{y_t}\big), \qquad
# \ell_t = -\sum_k q_{t,k}\log \pi_{t,k}, \qquad \nabla_z \ell_t = \pi_t - q_t.$$
# * Closed form, with $p = p_{\mathrm{base}}(y_t)$: $q_t = (1-\varepsilon)\,e_{y_t} + \varepsilon\,
# p_{\mathrm{base}}(\cdot \mid k \neq y_t)$ and
# $$\varepsilon = \frac{1 - p}{1 + (e^\beta - 1)\,p}.$$
# $\beta \to \infty$ gives SFT ($\varepsilon = 0$); $\beta = 0$ gives the base ($\varepsilon = 1 - p$, no learning).
# * Global objective: $\max_\pi \mathbb{E}_\pi[R] - \frac{1}{\eta}\mathrm{KL}(\pi\|\pi_{\mathrm{base}})$, optimum
# $\pi_{\mathrm{base}}\,e^{\eta R}/Z$. RL with a KL penalty of strength $1/\lambda$ to its start $\pi_0$ converges
# to $\pi_0\, e^{\lambda R}/Z$.
# * **T4 (consistency).** Starting from $\pi_0 \propto \pi_{\mathrm{base}} e^{\beta R}$, SFT-then-RL reaches
# $\pi_{\mathrm{base}} e^{(\beta + \lambda) R}$: the global optimum **iff** $\beta = \eta - \lambda$. From a one-hot
# SFT start it stays one-hot for every $\lambda$.
# * Sequences: the exact Gibbs target $\pi^\star(y) \propto \pi_{\mathrm{base}}(y)\, e^{\beta 1[y = y^\star]}$ tilts
# position $t$ by $\log\big(1 + (e^\beta - 1)\, P_{\mathrm{base}}(y^\star_{>t} \mid y^\star_{\le t})\big) \le \beta$;
# the token loss tilts every position by $\beta$.

# %%
import matplotlib.pyplot as plt
import numpy as np
import sympy as sp
import torch
from IPython.display import Math, display

from theory import bandit as tb
from theory import mdp, symbolic
from toybench.tabular import dynamics as dyn
from toybench import losses, metrics

torch.set_num_threads(1)
np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## The target, and the $\varepsilon$ formula
#
# `toybench.losses.gift_target` builds $q$ with a softmax (as the released code does);
# `theory.bandit.gift_target` builds it from the $\varepsilon$ formula. They are independent
# implementations, so agreeing is a real check.

# %%
rng = np.random.default_rng(0)
V = 8
z_base = rng.normal(size=(4, V))  # four random base distributions
y = np.array([0, 1, 2, 3])  # one demonstrated token each
for beta in (0.0, 1.0, 5.0, float("inf")):
    q_torch = losses.gift_target(torch.tensor(z_base)[:, None], torch.tensor(y)[:, None], beta)[:, 0].numpy()
    q_theory = tb.gift_target(tb.softmax(z_base), y, beta)
    assert np.allclose(q_torch, q_theory), beta
    print(f"beta = {beta:>4}: mass left off the demo 1 - q(y) = {1 - q_torch[np.arange(4), y]}")

# %%
p_grid = np.array([0.01, 0.1, 0.3, 0.6])
betas = np.linspace(0, 12, 121)
plt.figure(figsize=(5, 3.5))
for p_y in p_grid:
    plt.semilogy(betas, tb.gift_eps(p_y, betas), label=f"$p_{{base}}(y) = {p_y}$")
plt.xlabel(r"inverse temperature $\beta$")
plt.ylabel(r"$\varepsilon$ = mass on the alternatives")
plt.legend()
plt.tight_layout()
print("eps at the code default beta = 20, p = 0.01:", tb.gift_eps(0.01, 20.0))

# %% [markdown]
# **What to notice.** $\varepsilon$ decays like $e^{-\beta}/p$: at the code default $\beta = 20$ the target is
# one-hot to 7 decimals unless the base gave the demonstration less than $\sim 10^{-7}$. The interesting
# regime in small toys is $\beta \in [0, 10]$, which is what we sweep.

# %% [markdown]
# ## A $\beta$ sweep with real training
#
# 16 random base policies over $V = 8$ answers; answers 0, 1, 2 are correct and the demonstration is always
# answer 0. We train with `gift_loss` (via `dyn.gift_demo_loss`) for each $\beta$, then check that training
# reached the target and measure what the SFT checkpoint keeps: reward $J$, entropy, and the coverage of
# correct answers (how many have probability $> 0.05$).

# %%
I = 16
zb = torch.tensor(rng.normal(size=(I, 1, V)))  # (I, N=1, V) base logits
R = torch.zeros(I, V, dtype=torch.float64)
R[:, :3] = 1.0  # three correct answers
y_star = torch.zeros(I, dtype=torch.long)
sweep = [0.0, 1.0, 2.0, 4.0, 8.0, float("inf")]


def stats(z):
    """Mean over instances of J, entropy and coverage (plotting glue)."""
    pi = torch.softmax(z[:, 0], -1)
    return [dyn.expected_return(z, R).mean().item(), metrics.entropy(z[:, 0]).mean().item(),
            metrics.coverage(pi, R > 0, 0.05).double().mean().item()]


z_sft = {}
for beta in sweep:
    z_sft[beta], _ = dyn.run(zb, lambda z: dyn.gift_demo_loss(z, zb, y_star, beta), steps=100, lr=1.0)
    q = losses.gift_target(zb, y_star[:, None], beta)  # (I, 1, V)
    gap = (torch.softmax(z_sft[beta], -1) - q).abs().max().item()
    J, H, cov = stats(z_sft[beta])
    print(f"beta = {beta:>4}: |pi - q|_max = {gap:.1e}   J = {J:.3f}   H = {H:.3f}   coverage = {cov:.2f}")

# %% [markdown]
# What does the RL stage make of each checkpoint? KL-regularised RL at $\lambda = 2$ from each SFT checkpoint
# (closed form $\pi_0 e^{\lambda R}/Z$, checked against training in the T4 section below):

# %%
lam_sweep = 2.0
after = {}
for beta in sweep:
    pi0 = torch.softmax(z_sft[beta][:, 0], -1).numpy()
    pi1 = tb.kl_regularised_optimum(pi0, R.numpy(), 1 / lam_sweep)
    after[beta] = (tb.expected_reward(pi1, R.numpy()).mean(), metrics.coverage(pi1, R.numpy() > 0, 0.05).mean())
labels = [str(b) for b in sweep]
fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
ax[0].plot(labels, [stats(z_sft[b])[0] for b in sweep], "o-", label="after SFT")
ax[0].plot(labels, [after[b][0] for b in sweep], "s-", label="after SFT + KL-RL")
ax[0].set(xlabel=r"GIFT $\beta$ (inf = standard SFT)", ylabel="reward J (pass@1)")
ax[0].legend()
ax[1].plot(labels, [stats(z_sft[b])[2] for b in sweep], "o-", label="after SFT")
ax[1].plot(labels, [after[b][1] for b in sweep], "s-", label="after SFT + KL-RL")
ax[1].set(xlabel=r"GIFT $\beta$ (inf = standard SFT)", ylabel="correct answers covered (of 3)")
ax[1].legend()
plt.tight_layout()

# %% [markdown]
# **What to notice.** Lower $\beta$ = lower reward right after SFT (the GIFT paper reports the same: pass@1
# after SFT is *lower* than standard SFT) but more entropy and more correct alternatives kept. Standard
# SFT ($\beta = \infty$) reaches the highest $J$ and keeps one answer. RL narrows the reward gap but does not
# close it at this finite $\lambda$ (a KL-regularised stage stays near its start), while the coverage gap
# stays or widens: RL with a KL penalty cannot revive answers that SFT has wiped out. So $\beta$ trades
# pass@1 for diversity; which $\beta$ is *right* for a given RL stage is the subject of T4.

# %% [markdown]
# ## T4: which $\beta$ is consistent with KL-regularised RL?
#
# Now the RL stage: maximise $J - \frac{1}{\lambda}\mathrm{KL}(\pi\|\pi_0)$ from the SFT checkpoint $\pi_0$. We run it
# for real (exact PG surrogate + exact KL, `dyn.pg_surrogate` and `dyn.kl_to_reference`) and compare with the
# closed form $\pi_0 e^{\lambda R}/Z$. For consistency we use the reward-tilted initialisation
# $\pi_0 \propto \pi_{\mathrm{base}} e^{\beta R}$ (the Gibbs target of the global objective) and measure the
# distance $\mathrm{KL}(\pi_{\mathrm{global}}\|\pi_{\mathrm{RL}})$ to the global optimum with $\eta = 3$.

# %%
eta, lam = 3.0, 1.0
pi_base = tb.softmax(zb[:, 0].numpy())  # (I, V)
Rn = R.numpy()
pi_global = tb.kl_regularised_optimum(pi_base, Rn, 1 / eta)
beta_grid = np.linspace(0.0, 5.0, 51)
dist = []
for beta in beta_grid:
    pi0 = tb.kl_regularised_optimum(pi_base, Rn, 1 / beta) if beta > 0 else pi_base
    dist.append(tb.kl(pi_global, tb.kl_regularised_optimum(pi0, Rn, 1 / lam)).mean())

# the same RL stage trained for real, from beta = eta - lam = 2
z0 = torch.log(torch.tensor(tb.kl_regularised_optimum(pi_base, Rn, 1 / (eta - lam))))[:, None]
objective = lambda z: dyn.pg_surrogate(z, R) + dyn.kl_to_reference(z, z0) / lam
z_rl, _ = dyn.run(z0, objective, steps=400, lr=0.5)
pi_rl = torch.softmax(z_rl[:, 0], -1).numpy()
pi_rl_closed = tb.kl_regularised_optimum(tb.softmax(z0[:, 0].numpy()), Rn, 1 / lam)
print(f"trained RL vs closed form: max |diff| = {np.abs(pi_rl - pi_rl_closed).max():.1e}")
print(f"KL(global || trained RL from beta = 2) = {tb.kl(pi_global, pi_rl).mean():.2e}")

plt.figure(figsize=(5, 3.5))
plt.plot(beta_grid, dist, label=r"$\mathrm{KL}(\pi_{global}\,\|\,\pi_{RL})$")
plt.axvline(eta - lam, ls="--", color="k", label=r"$\beta = \eta - \lambda$")
plt.xlabel(r"GIFT inverse temperature $\beta$")
plt.ylabel("distance to the global optimum")
plt.legend()
plt.tight_layout()

# %% [markdown]
# And sympy derives the same condition from the stationarity of the RL objective (`symbolic.gift_consistency_beta`):

# %%
d = symbolic.gift_consistency_beta()
display(Math(r"\beta^\star = " + sp.latex(d.derived)))
print("proved:", d.proved)

# %% [markdown]
# **What to notice.** The distance vanishes exactly at $\beta = \eta - \lambda$: SFT should be *hot* enough that
# the RL stage has room to do its share of the tilt. A one-hot start can never get there: RL with a KL
# penalty to it cannot put mass back on answers it has forgotten (next cell).

# %%
onehot = np.eye(V)[0]  # the beta = inf SFT checkpoint
print("KL-regularised RL from one-hot, lam = 1, 10, 100:",
      [tb.kl_regularised_optimum(onehot, Rn[0], 1 / l_).round(3)[:3].tolist() for l_ in (1, 10, 100)])

# %% [markdown]
# ## Token tilt vs sequence tilt on a small tree
#
# On sequences the exact Gibbs target tilts *each position* by less than $\beta$ (it already counts that the
# rest of the demonstration must also be produced). The token-level GIFT loss tilts every position by $\beta$.
# `theory.mdp` computes both exactly on a prefix tree ($V = 3$ tokens, horizon $H = 5$).

# %%
Vt, Ht, beta = 3, 5, 3.0
base_tree = rng.normal(size=(mdp.num_internal(Vt, Ht), Vt))  # tabular base logits, one row per prefix
demo = np.array([0, 2, 1, 1, 0])
seq_tilt = mdp.sequence_gibbs_tilt(base_tree, demo, beta)
assert np.allclose(seq_tilt, mdp.sequence_gibbs_tilt_closed_form(base_tree, demo, beta))
tok_tilt = mdp.token_gift_tilt(base_tree, demo, beta)

pos = np.arange(Ht)
plt.figure(figsize=(5, 3.5))
plt.bar(pos - 0.2, tok_tilt, 0.4, label="token GIFT (every position)")
plt.bar(pos + 0.2, seq_tilt, 0.4, label="exact sequence Gibbs")
plt.xlabel("position t in the demonstration")
plt.ylabel("log-odds tilt of the demo token")
plt.legend()
plt.tight_layout()
print("token tilt:", tok_tilt, "\nsequence tilt:", seq_tilt)

# %% [markdown]
# **What to notice.** Only the last position gets the full $\beta$; early positions get
# $\log(1 + (e^\beta - 1) P_{\mathrm{base}}(\text{rest}))$, small when the base is unlikely to complete the
# demonstration. The token loss is a one-step approximation that over-tilts early (often high-entropy)
# tokens.

# %% [markdown]
# ## Exercises
#
# **1.** Show that GIFT at $\beta = 0$ does not learn anything. Which gradient does the loss give at $\pi = \pi_{\mathrm{base}}$?
#
# <details><summary>Answer</summary>
#
# At $\beta = 0$ the target is $q = p_{\mathrm{base}}$, so the gradient $\pi - q$ vanishes at the base:
# the base is already the optimum. Checked below with `theory.bandit.grad_gift`.
# </details>

# %%
assert np.allclose(tb.grad_gift(z_base, y, z_base, beta=0.0), 0.0)

# %% [markdown]
# **2.** With $\eta = 5$ and an RL stage at $\lambda = 2$, which $\beta$ should SFT use? Find it on a grid with the
# closed forms.
#
# <details><summary>Answer</summary>
#
# $\beta = \eta - \lambda = 3$.
# </details>

# %%
eta2, lam2 = 5.0, 2.0
glob2 = tb.kl_regularised_optimum(pi_base, Rn, 1 / eta2)
d2 = [tb.kl(glob2, tb.kl_regularised_optimum(tb.kl_regularised_optimum(pi_base, Rn, 1 / b), Rn, 1 / lam2)).mean()
      for b in beta_grid[1:]]
assert np.isclose(beta_grid[1:][int(np.argmin(d2))], eta2 - lam2)

# %% [markdown]
# **3.** On the tree, how large must $\beta$ be for the *first* token's sequence tilt to reach 90% of $\beta$?
# Why does that depend on the base model?
#
# <details><summary>Answer</summary>
#
# The first tilt is $\log(1 + (e^\beta - 1) P)$ with $P = P_{\mathrm{base}}(y^\star_{>0} \mid y^\star_0)$. For large
# $\beta$ it is $\approx \beta + \log P$, so reaching $0.9\beta$ needs $\beta \gtrsim 10 \log(1/P)$: the less likely the
# base is to finish the demonstration, the larger $\beta$ must be. The cell prints it for this tree.
# </details>

# %%
big = np.linspace(0.5, 200, 400)
first = np.array([mdp.sequence_gibbs_tilt_closed_form(base_tree, demo, b)[0] for b in big])
print(f"first-token tilt reaches 90% of beta at beta ~ {big[np.argmax(first >= 0.9 * big)]:.1f}")
