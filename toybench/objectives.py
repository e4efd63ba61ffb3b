"""The training objectives every scale optimises: GRPO's per-token loss, its normaliser, the SFT loss.

The tabular pipeline (``toybench.tabular.pipeline``), the tiny transformer (``toybench.tiny.train``)
and ``llm`` (``llm.grpo``, ``llm.sft``) gather tensors and counts; the objective itself is assembled
here and nowhere else, from the formulas of ``toybench.losses``:

* :func:`grpo_per_token`: TRL's per-token GRPO loss, the clipped surrogate plus ``kl_coef`` times a
  k1/k3 KL estimate to a reference policy (log-probs as the caller scored them, e.g. at the sampling
  temperature);
* :func:`normalise`: ONE normaliser for every TRL ``loss_type`` (and every ``losses.reduce`` mode),
  applied to a share of a batch whose counts (:class:`Counts`) the caller gives: a whole tabular
  batch of independent seeds, one seed's tiny-transformer batch, or one micro-batch of an ``llm``
  step whose counts were summed over micro-batches and ranks;
* :func:`sft_per_token`: the per-token SFT loss of a ``toybench.methods.Method`` (its position-wise
  loss, or ``gift_seq``'s sequence-level target, times PEAR's weights where the method has them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from toybench import losses

if TYPE_CHECKING:
    from toybench.methods import Method

__all__ = [
    "LOSS_TYPES",
    "Counts",
    "SFTInputs",
    "grpo_per_token",
    "loss_type_reduction",
    "normalise",
    "sft_per_token",
]

#: TRL's ``loss_type`` -> this project's ``losses.reduce`` mode. ``dr_grpo`` divides by
#: num_sequences * max_completion_length (``constant``); ``sum`` is this project's extra.
LOSS_TYPES = {
    "grpo": "seq_mean",
    "bnpo": "token_mean",
    "dapo": "token_mean",
    "dr_grpo": "constant",
    "sum": "sum",
}


def loss_type_reduction(loss_type: str) -> str:
    """The ``losses.reduce`` mode of a TRL ``loss_type``; ValueError naming ``loss_type`` if unknown."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {tuple(LOSS_TYPES)}, got {loss_type!r}")
    return LOSS_TYPES[loss_type]


# ----------------------------------------------------------------------------- the normaliser
@dataclass(frozen=True)
class Counts:
    """The counts of the batch a loss is normalised over (all its pieces, all ranks).

    ``rows``: its sequences (TRL's GRPO counts empty ones too; ``llm``'s SFT ``seq_mean`` counts only
    sequences with a counted token); ``tokens``: its counted tokens; ``length``: the length of the
    ``constant`` mode (``dr_grpo``'s ``max_completion_length``); ``groups``: the batch holds that many
    independent, equally sized groups (the tabular pipeline's seeds), and the loss is the SUM of each
    group's own normalised loss.
    """

    rows: float
    tokens: float
    length: float
    groups: int = 1

    @staticmethod
    def of(mask: torch.Tensor, length: float | None = None, groups: int = 1) -> Counts:
        """The counts of a whole batch ``mask [B, T]`` (``length`` None: its padded length ``T``)."""
        return Counts(
            float(mask.shape[0]),
            float(mask.sum()),
            float(mask.shape[1] if length is None else length),
            groups,
        )


def normalise(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str, counts: Counts) -> torch.Tensor:
    """This piece's share of the normalised loss of the batch ``counts`` describes.

    ``loss_type``: a TRL name (:data:`LOSS_TYPES`) or a ``losses.reduce`` mode. With ``S_i = sum_t m l``
    per sequence, ``N = counts.rows``, per group (the loss is the sum over ``counts.groups`` groups):
      grpo / seq_mean:                 sum_i S_i / max(|m_i|, 1) / N
      bnpo, dapo / token_mean:         sum_i S_i / max(counts.tokens, 1)
      dr_grpo / constant:              sum_i S_i / (N * counts.length)
      sum:                             sum_i S_i
    The shares of all pieces (micro-batches, ranks) add up to the loss of the whole batch. (TRL's
    ``bnpo`` and ``grpo`` normalise per micro-batch and divide by the accumulation steps; with equal
    micro-batches ``grpo`` is the same, and ``bnpo`` equals ``dapo`` here whatever the split.) Masked
    positions never leak, even when they hold inf or NaN.
    """
    mode = LOSS_TYPES.get(loss_type, loss_type)
    if mode not in losses.REDUCE_MODES:
        raise ValueError(
            f"loss_type must be one of {tuple(LOSS_TYPES)} or {losses.REDUCE_MODES}, got {loss_type!r}"
        )
    k = counts.groups
    if mode == "sum":
        return losses.reduce(per_token, mask, "sum")
    if mode == "constant":
        rows = counts.rows / k if k != 1 else counts.rows
        return losses.reduce(per_token, mask, "constant", constant=max(rows * counts.length, 1.0))
    if mode == "token_mean":
        loss = losses.reduce(per_token, mask, "constant", constant=max(counts.tokens, 1.0))
    else:
        nonempty = float((mask.sum(1) > 0).sum())
        loss = losses.reduce(per_token, mask, "seq_mean") * (nonempty / max(counts.rows, 1.0))
    return loss if k == 1 else k * loss


# ----------------------------------------------------------------------------- GRPO
def grpo_per_token(
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    adv: torch.Tensor,
    *,
    epsilon: float,
    epsilon_high: float,
    kl_coef: float = 0.0,
    kl_kind: str = "k3",
) -> torch.Tensor:
    """TRL's per-token GRPO loss ``[B, T]``: ``-min(r A, clip(r, 1-eps, 1+eps_high) A) + kl_coef * KL``.

    ``r = exp(logp - old_logp)`` (``old_logp`` None: ``logp.detach()``, TRL at ``num_iterations=1``);
    ``A`` is one advantage per sequence ``[B]`` broadcast over its tokens; KL is
    ``toybench.losses.kl_penalty`` (k3 = TRL's ``exp(ref - logp) - (ref - logp) - 1``; k1), added
    when ``ref_logp`` is given and ``kl_coef > 0``. Log-probs are taken as given: a caller that
    samples at a temperature scores them under the same ``logits / T``.
    """
    old = logp.detach() if old_logp is None else old_logp
    per_token = losses.clipped_surrogate_loss(logp, old, adv, epsilon, epsilon_high)
    if ref_logp is not None and kl_coef > 0:
        per_token = per_token + kl_coef * losses.kl_penalty(logp, ref_logp, kind=kl_kind)
    return per_token


# ----------------------------------------------------------------------------- SFT
@dataclass
class SFTInputs:
    """What a method's SFT loss reads, ``[B, T(, V)]``; what the method does not need may be None.

    ``logits``/``targets``: the trained policy's logits and the data tokens; ``base_logits``: the
    frozen pi_base (GIFT); ``teacher_logits``: the EMA teacher (CurioSFT); ``behavior_logp``: log
    pi_beta of the data tokens (PEAR, unless ``@self``); ``sequence_target``: log q(. | y_<t) of the
    exact sequence-level Gibbs target (``gift_seq``, tabular only). ``token_loss``: the method's
    position-wise loss when the caller computed it already (``llm``'s chunked and fused kernels,
    which never hold ``[B, T, V]`` logits); then ``logits`` and the frozen logits are not read.
    """

    mask: torch.Tensor
    targets: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    base_logits: torch.Tensor | None = None
    teacher_logits: torch.Tensor | None = None
    behavior_logp: torch.Tensor | None = None
    sequence_target: torch.Tensor | None = None
    token_loss: torch.Tensor | None = None


def sft_per_token(method: Method, inputs: SFTInputs) -> torch.Tensor:
    """Per-token SFT loss ``[B, T]`` of ``method`` (unreduced; reduce with :func:`normalise`).

    The position-wise loss (``Method.token_loss``, or ``inputs.token_loss``), or for ``gift_seq`` the
    cross-entropy to the sequence-level target; PEAR's detached weights (``Method.weights``) multiply
    it here, at every scale.
    """
    x = inputs
    if x.token_loss is not None:
        per_token = x.token_loss
    elif method.needs_sequence_target:
        per_token = method.sequence_loss(x.logits, x.targets, x.sequence_target)
    else:
        per_token = method.token_loss(x.logits, x.targets, x.base_logits, x.teacher_logits, mask=x.mask)
    G = method.weights(-per_token.detach(), x.behavior_logp, x.mask)
    return per_token if G is None else G * per_token
