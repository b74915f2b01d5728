"""The newer Muon family: NorMuon and AdaMuon, one move each after Muon's direction.

Each is :class:`normopt.Muon` with one more move between the direction and the step
(:func:`normopt.optim.moves.normuon_`, :func:`normopt.optim.moves.adamuon_`), run on a
whole stack at once; everything else (routing, AdamW groups, ``num_heads``, the
device-side skip, state dicts) is Muon's.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import Tensor

from normopt import distributed
from normopt._checks import check_number
from normopt.optim import moves
from normopt.optim.base import Block
from normopt.optim.moves import Mask
from normopt.optim.muon import Muon

__all__ = ["AdaMuon", "NorMuon"]


def _plain_muon(group: dict[str, Any]) -> bool:
    return group["algorithm"] == "muon" and group.get("norm") is None


class _SecondMoment(Muon):
    """Muon with a second moment of its direction: the ``beta2`` and ``eps`` keys of the
    Muon groups (AdamW groups keep their own ``eps``)."""

    def __init__(self, params_or_model: Any, beta2: float, eps: float, **kwargs: Any) -> None:
        check_number("beta2", beta2, 0.0, 1.0, high_open=True)
        check_number("eps", eps, 0.0, math.inf, low_open=True)
        self._family_defaults = {"beta2": beta2, "eps": eps}
        super().__init__(params_or_model, **kwargs)

    def _sharding_supported(
        self, group: dict[str, Any], layouts: list[distributed.ShardLayout]
    ) -> bool:
        # sharded (FSDP2): the second moment and the rescale run on each rank's rows, with
        # the Frobenius norms summed across the shards; that needs each shard to hold whole
        # rows of whole matrices: a parameter split along its dim 0 and read as it is
        if not _plain_muon(group):
            return True
        plain_view = (
            group["num_heads"] == 1
            and group["split"] == 1
            and group["batch_dims"] == 0
            and not group.get("transposed", False)
        )
        return plain_view and all(lay.dim in (None, 0) for lay in layouts)

    def _sharded_rows(self, block: Block, D: Tensor) -> list[Tensor]:
        """Each parameter's shard of ``D`` (a flat block of shards) as ``(local rows, cols)``."""
        return [d.reshape(d.shape[0], math.prod(d.shape[1:])) for d in block.rows(D)]

    def _sharded_rescale(
        self, block: Block, O: Tensor, N: list[Tensor], target: Tensor, eps: float
    ) -> Tensor:
        """``N_j * target_j / (||N_j||_F + eps)`` for each parameter ``j``, the norms summed
        over the shards (one ``all_reduce``); returns a flat block like ``O``."""
        sq = torch.stack(torch._foreach_norm(N)).square_()  # (B,) this rank's partial sums
        distributed.all_sum(sq, block.exchange.group)
        factor = target / (sq.sqrt_() + eps)  # (B,)
        out = torch.empty_like(O)
        rows = self._sharded_rows(block, out)
        torch._foreach_copy_(rows, N)
        torch._foreach_mul_(rows, list(factor.to(out.dtype).unbind(0)))
        return out

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        if group.get("algorithm", "muon") != "adamw":
            check_number("beta2", group["beta2"], 0.0, 1.0, high_open=True)
            check_number("eps", group["eps"], 0.0, math.inf, low_open=True)


class NorMuon(_SecondMoment):
    r"""NorMuon: Muon with a neuron-wise second moment of the orthogonalized update.

    For a matrix parameter ``W`` (``B``, ``v`` the state; ``v`` holds one value per row,
    i.e. per output neuron)::

        B_t = beta B_{t-1} + (1 - beta) G_t;   M = (1 - beta) G_t + beta B_t   (Nesterov)
        O   = polar(M)                                           (Newton-Schulz, as Muon)
        v_t = beta2 v_{t-1} + (1 - beta2) mean_j O_ij^2          (per row i)
        N   = O / (sqrt(v_t) + eps);   N <- N ||O||_F / (||N||_F + eps)
        W  <- (1 - lr wd) W - lr scale(d_out, d_in) N

    No bias correction: the Frobenius rescale removes any scalar factor of ``v``.
    Every other tensor gets AdamW as in :class:`Muon`; groups with a ``norm`` and
    ``"adamw"``/``"norm"`` groups are plain Muon (no normalization).

    Source: Li et al., "NorMuon: Making Muon more efficient and scalable"
    (arXiv 2510.05491); the authors' ``normuon.py`` (github.com/zichongli5/NorMuon,
    ``normuon_update``) and microsoft/dion's ``dion/normuon.py``
    (``_normuon_normalization_core``). Followed here: the row mean of ``O^2`` over the
    last dim, ``lerp`` with ``1 - beta2``, ``eps`` added to ``sqrt(v)`` and to the new
    norm (the authors' 1e-10; dion uses 1e-8 and clamps), Jordan's shape scale after the
    rescale (the authors' ``max(1, d_out/d_in)^0.5``; dion defaults to its spectral
    rule), Nesterov on (the authors' default; dion's is off). Chosen here: a 4-D kernel
    is normalized per row of its ``(d_out, -1)`` view, as it is orthogonalized; with
    ``num_heads`` each head is a matrix (per-head rows and rescale, as dion's per-block
    rescale of ``split_sizes``); tall matrices are not merged into their transposes'
    stacks (a row of the transpose is a column). ``state[p]["second_momentum_buffer"]``
    has the element shape with its last dim 1 (``(d_out, 1)`` for a matrix).

    Args:
        params_or_model, lr, momentum, nesterov, weight_decay, ...: as :class:`Muon`.
        beta2: the second-moment decay (0.95, the authors' default).
        eps: added to ``sqrt(v)`` and to the new Frobenius norm (1e-10).

    Example:
        >>> import torch, normopt
        >>> w = torch.nn.Parameter(torch.randn(16, 8))
        >>> opt = normopt.NorMuon([w], lr=0.02)
        >>> w.square().sum().backward(); opt.step()
        >>> opt.state[w]["second_momentum_buffer"].shape  # one second moment per row
        torch.Size([16, 1])
    """

    def __init__(
        self,
        params_or_model: Any,
        lr: float | Tensor = 0.02,
        momentum: float = 0.95,
        beta2: float = 0.95,
        eps: float = 1e-10,
        **kwargs: Any,
    ) -> None:
        super().__init__(params_or_model, beta2, eps, lr=lr, momentum=momentum, **kwargs)

    def _merge_transposed(self, group: dict[str, Any], params: list[Tensor]) -> list[bool]:
        return [False] * len(params)  # rows are neurons: a transposed stack would mix them up

    def _apply(self, group: dict[str, Any], block: Block, D: Tensor, mask: Mask | None) -> None:
        if _plain_muon(group) and isinstance(block.exchange, distributed.OwnerExchange):
            D = self._normuon_sharded(group, block, D, mask)
        elif _plain_muon(group):
            element = (*block.shape[1:-1], 1)  # one value per row of every matrix
            v = self._state(block, "second_momentum_buffer", element)
            D = moves.normuon_(D, v, group["beta2"], group["eps"], mask)
        super()._apply(group, block, D, mask)

    def _normuon_sharded(
        self, group: dict[str, Any], block: Block, D: Tensor, mask: Mask | None
    ) -> Tensor:
        # moves.normuon_ on each rank's rows: v and the row means are local, the two
        # Frobenius norms are sums over the shards
        beta2, eps = group["beta2"], group["eps"]
        O = self._sharded_rows(block, D)
        v = self._row_state(block, "second_momentum_buffer")
        w: Any = 1.0 - beta2 if mask is None else mask.scaled(1.0 - beta2, D.dtype)
        for vj, oj in zip(v, O):
            vj.lerp_((oj * oj).mean(dim=-1, keepdim=True), w)
        N = [oj / (vj.sqrt() + eps) for vj, oj in zip(v, O)]
        sq = torch.stack(torch._foreach_norm(O)).square_()  # (B,) partial ||O||_F^2
        distributed.all_sum(sq, block.exchange.group)
        return self._sharded_rescale(block, D, N, sq.sqrt_(), eps)

    def _row_state(self, block: Block, key: str) -> list[Tensor]:
        """Per-row state ``(rows, 1)`` of each parameter of a flat block of shards: views of
        one buffer of the local rows; ``state[p][key]`` a DTensor of global shape
        ``(rows, 1)`` sharded along the rows like ``p``."""
        if self._held(block, key) is not None:
            return cast(list[Tensor], block.extras[key + "/rows"])
        rows = [t.shape[0] for t in block.targets]
        buf = torch.zeros(sum(rows), 1, dtype=block.dtype, device=block.device)
        views = list(buf.split(rows))
        for p, v in zip(block.params, views):
            old = self.state[p].get(key)
            if isinstance(old, Tensor):
                v.copy_(distributed.local(old))
        wrapped = [
            distributed.wrap_like(p, v, (p.shape[0], 1)) for p, v in zip(block.params, views)
        ]
        for p, w in zip(block.params, wrapped):
            self.state[p][key] = w
        block.buffers[key], block.views[key] = buf, wrapped
        block.extras[key + "/rows"] = views
        return views


class AdaMuon(_SecondMoment):
    r"""AdaMuon: Muon with an entrywise second moment of the orthogonalized update.

    For a matrix parameter ``W`` of shape ``(m, n)`` (``B``, ``v`` the state; ``t`` its
    step count)::

        B_t = beta B_{t-1} + (1 - beta) G_t;   M = (1 - beta) G_t + beta B_t   (Nesterov)
        O   = polar(M)
        v_t = beta2 v_{t-1} + (1 - beta2) O * O
        N   = O / (sqrt(v_t / (1 - beta2^t)) + eps)
        N  <- N sqrt(min(m, n)) / (||N||_F + eps)     (the Frobenius norm of U V^T)
        W  <- (1 - lr wd) W - lr scale(m, n) N        (scale: 0.2 sqrt(max(m, n)))

    so with the default ``adjust_lr="match_rms_adamw"`` every update has RMS ``0.2 lr``,
    as AdamW's typically has. Other tensors get AdamW as in :class:`Muon`.

    Source: Si, Zhang, Shen, "AdaMuon: Adaptive Muon Optimizer" (arXiv 2507.11005); the
    authors' ``adamuon.py`` (github.com/Chongjie-Si/AdaMuon, commit 3b84e03): momentum
    0.95 with Nesterov, beta2 0.999, eps 1e-8, bias-corrected ``v``, the rescale to
    ``sqrt(min(m, n))`` and the step ``lr 0.2 sqrt(max(m, n))``, all followed here.
    pytorch-optimizer's ``AdaMuon`` differs (no Nesterov, beta1 0.9, rescale to
    ``0.2 sqrt(mn)`` and then a second shape factor on the lr); not followed. Some
    reimplementations orthogonalize ``sign(M)`` ("sign stabilization", attributed to a
    later version of the paper); the authors' code above does not, nor does this class.
    Chosen here: ``v`` is updated by ``lerp`` (the masked form of the skip policy; equal to
    ``mul``/``addcmul`` up to rounding); weight decay defaults to 0 as in :class:`Muon`
    (the authors' default is 0.01); with ``num_heads`` each head is a matrix (``m`` its
    rows), and a 4-D kernel is its ``(d_out, -1)`` view (the authors take ``min`` over all
    of ``p.shape``). ``state[p]["exp_avg_sq"]`` is ``v`` in the parameter's shape and
    ``state[p]["step"]`` the count.

    Args:
        params_or_model, lr, momentum, nesterov, weight_decay, ...: as :class:`Muon`.
        beta2: the second-moment decay (0.999).
        eps: added to the root of ``v`` and to the norm (1e-8).
        adjust_lr: as :class:`Muon`, default ``"match_rms_adamw"``.

    Example:
        >>> import torch, normopt
        >>> w = torch.nn.Parameter(torch.randn(16, 8))
        >>> w0 = w.detach().clone()
        >>> opt = normopt.AdaMuon([w], lr=0.02)
        >>> w.square().sum().backward(); opt.step()
        >>> round(float((w.detach() - w0).square().mean().sqrt() / 0.02), 3)  # RMS 0.2 lr
        0.2
    """

    def __init__(
        self,
        params_or_model: Any,
        lr: float | Tensor = 0.02,
        momentum: float = 0.95,
        beta2: float = 0.999,
        eps: float = 1e-8,
        adjust_lr: str | None = "match_rms_adamw",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            params_or_model, beta2, eps, lr=lr, momentum=momentum, adjust_lr=adjust_lr, **kwargs
        )

    def _apply(self, group: dict[str, Any], block: Block, D: Tensor, mask: Mask | None) -> None:
        if _plain_muon(group) and isinstance(block.exchange, distributed.OwnerExchange):
            D = self._adamuon_sharded(group, block, D, mask)
        elif _plain_muon(group):
            beta2 = group["beta2"]
            v = self._state(block, "exp_avg_sq")
            step = self._counter(block)  # (B,), the rows are state[p]["step"]
            step.add_(1.0 if mask is None else mask.ok(step.dtype))
            # t >= 1: a skipped first step leaves t = 0 (1 - beta2^0 = 0 would divide by 0)
            t = step.to(block.dtype).clamp_min_(1.0)
            bc2 = block.per_param(1.0 - torch.pow(beta2, t))
            target = math.sqrt(min(block.shape[-2], block.shape[-1]))
            D = moves.adamuon_(D, v, beta2, group["eps"], bc2, target, mask)
        super()._apply(group, block, D, mask)

    def _adamuon_sharded(
        self, group: dict[str, Any], block: Block, D: Tensor, mask: Mask | None
    ) -> Tensor:
        # moves.adamuon_ on a flat block of shards: v is entrywise (local), the norm of N
        # per matrix a sum over the shards (one all_reduce)
        beta2, eps = group["beta2"], group["eps"]
        v = self._state(block, "exp_avg_sq")  # (1, N): the shards of every parameter
        step = self._counter(block)
        step.add_(1.0 if mask is None else mask.ok(step.dtype))
        t = step.to(block.dtype).clamp_min_(1.0)  # as the stacked path
        w: Any = 1.0 - beta2 if mask is None else mask.scaled(1.0 - beta2, D.dtype)
        v.lerp_(D * D, w)
        N = D / ((v / block.per_param(1.0 - torch.pow(beta2, t))).sqrt_() + eps)
        target = block.extras.get("adamuon/target")
        if target is None:  # sqrt(min(m, n)) of each whole matrix
            sizes = [self._element_shape(p, group)[-2:] for p in block.params]
            target = block.extras["adamuon/target"] = torch.tensor(
                [math.sqrt(min(s)) for s in sizes], dtype=block.dtype, device=block.device
            )
        return self._sharded_rescale(block, D, self._sharded_rows(block, N), target, eps)
