"""QK-clip (Kimi K2's MuonClip): after the step, shrink W_q and W_k of heads whose logits grew.

For each attention head ``h`` with ``S_h`` its largest pre-softmax logit seen since the
last step (``q_i . k_j / sqrt(d_head)``, the logit softmax receives), and a threshold
``tau``::

    eta_h = tau / S_h  if S_h > tau  else 1
    W_q^h <- sqrt(eta_h) W_q^h,    W_k^h <- sqrt(eta_h) W_k^h

so the largest logit of a clipped head becomes ``tau`` on the same inputs and every other
head is untouched (its factor is exactly 1). Everything is computed on the device with
``torch.where``: nothing is read back, whether a head is clipped or not.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from normopt._checks import check_int, check_number

__all__ = ["QKClip", "max_logits", "qk_clip_"]


def max_logits(
    q: Tensor, k: Tensor, mask: Tensor | None = None, scale: float | None = None
) -> Tensor:
    """The largest logit ``scale * q_i . k_j`` of every head: ``q`` ``(..., heads, L_q, d)``,
    ``k`` ``(..., heads, L_k, d)`` (as ``scaled_dot_product_attention`` takes them), ``mask``
    (broadcast to ``(..., heads, L_q, L_k)``) True where a pair is attended (SDPA's boolean
    convention). ``scale`` defaults to ``1 / sqrt(d)``. Returns ``(heads,)``, float32 at least
    (``-inf`` for a head with no attended pair).

    Example:
        >>> import torch
        >>> from normopt.optim import max_logits
        >>> q, k = torch.ones(2, 3, 4), torch.ones(2, 5, 4)  # 2 heads
        >>> max_logits(q, k)
        tensor([2., 2.])
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    dtype = torch.promote_types(q.dtype, torch.float32)
    S = (q.to(dtype) @ k.to(dtype).mT) * scale  # (..., heads, L_q, L_k)
    if mask is not None:
        S = S.masked_fill(~mask, -math.inf)
    S = S.flatten(-2).amax(dim=-1)  # (..., heads)
    return S.reshape(-1, S.shape[-1]).amax(dim=0)


@torch.no_grad()
def qk_clip_(
    q_weight: Tensor,
    k_weight: Tensor,
    logits: Tensor,
    tau: float,
    num_kv_heads: int | None = None,
    q_bias: Tensor | None = None,
    k_bias: Tensor | None = None,
) -> Tensor:
    """QK-clip in place: ``q_weight`` ``(heads * d_head, d_in)``, ``k_weight``
    ``(kv_heads * d_head, d_in)``, ``logits`` ``(heads,)`` the largest logit of each head.

    With grouped-query attention (``num_kv_heads < heads``, query heads ``g * r .. g * r + r - 1``
    sharing key head ``g``) a group takes the largest logit of its query heads, and its key
    head and all its query heads are scaled by that group's ``sqrt(eta)`` (Megatron-LM's
    grouped rule). A bias of the projection, when given, is scaled with its weight, so that
    ``q`` and ``k`` themselves are scaled. Returns the factor applied to each query head.

    Example:
        >>> import torch
        >>> from normopt.optim import qk_clip_
        >>> q_w, k_w = torch.ones(4, 3), torch.ones(4, 3)  # 2 heads of 2 rows
        >>> qk_clip_(q_w, k_w, torch.tensor([400.0, 50.0]), tau=100.0)
        tensor([0.5000, 1.0000])
        >>> q_w[:, 0]
        tensor([0.5000, 0.5000, 1.0000, 1.0000])
    """
    heads = logits.shape[-1]
    kv = heads if num_kv_heads is None else check_int("num_kv_heads", num_kv_heads, 1)
    if heads % kv:
        raise ValueError(f"num_kv_heads: {kv} does not divide the {heads} heads")
    if q_weight.shape[0] % heads or k_weight.shape[0] % kv:
        raise ValueError(
            f"q_weight/k_weight: {tuple(q_weight.shape)} and {tuple(k_weight.shape)} do not "
            f"split into {heads} query and {kv} key heads"
        )
    S = logits.to(torch.promote_types(logits.dtype, torch.float32))
    S = S.view(kv, heads // kv).amax(dim=1)  # (kv,): a group's largest logit
    # a head whose record is not finite (NaN, or Inf, which would zero its weights) is left
    # alone: a choice here, the sources do not say
    clip = S.gt(tau) & torch.isfinite(S)
    factor = torch.where(clip, torch.sqrt(tau / S), torch.ones_like(S))  # (kv,)
    q_factor = factor.repeat_interleave(heads // kv)  # (heads,)
    for w, f, n in ((q_weight, q_factor, heads), (k_weight, factor, kv)):
        w.view(n, -1).mul_(f.to(w.dtype).view(n, 1))
    for b, f, n in ((q_bias, q_factor, heads), (k_bias, factor, kv)):
        if b is not None:
            b.view(n, -1).mul_(f.to(b.dtype).view(n, 1))
    return q_factor


@dataclass(eq=False)
class _Pair:
    q_weight: Tensor
    k_weight: Tensor
    num_heads: int
    num_kv_heads: int
    q_bias: Tensor | None
    k_bias: Tensor | None
    logits: Tensor  # (heads,) running max since the last step
    hooks: list[Any] = field(default_factory=list)


class QKClip:
    r"""MuonClip's QK-clip as a post-step operation on a set of attention layers.

    Register each layer's q/k projections (:meth:`add` for separate projections,
    :meth:`add_attention` for ``nn.MultiheadAttention``), record the largest logits of
    each forward (:meth:`record`, or the forward hook that :meth:`add_attention`
    registers), and call :meth:`step` after every optimizer step, or let the optimizer
    call it (:meth:`attach`). Each call applies :func:`qk_clip_` with the largest logits
    recorded since the previous call and starts a new record; a layer with no record is
    left alone.

    The update, per head ``h`` with largest logit ``S_h`` (module docstring)::

        W_q^h <- sqrt(min(1, tau / S_h)) W_q^h,   W_k^h <- sqrt(min(1, tau / S_h)) W_k^h

    Source: Kimi Team, "Kimi K2: Open Agentic Intelligence" (arXiv 2507.20534), MuonClip,
    ``tau = 100``, the multi-head attention case; Megatron-LM's ``clip_qk``
    (``megatron/core/transformer/attention.py``, ``qk_clip_balancing_eta``) for the same
    rule with grouped-query attention. K2's rule for multi-head latent attention (the
    shared rotary key untouched, the rotary query scaled by ``eta``) is not implemented.
    Chosen here: biases are scaled with their weights; the hook on
    ``nn.MultiheadAttention`` recomputes ``q`` and ``k`` from the module's inputs (one
    extra ``L x L`` product per head and forward) and excludes pairs its boolean or
    ``-inf`` masks exclude, but not the values of a float mask's additive terms.

    Args:
        tau: the logit threshold (100, K2's).

    Example:
        >>> import torch, normopt
        >>> attn = torch.nn.MultiheadAttention(16, 4, batch_first=True)
        >>> opt = normopt.Muon(attn.parameters(), lr=0.02)
        >>> clip = normopt.QKClip(tau=100.0)
        >>> index = clip.add_attention(attn)
        >>> handle = clip.attach(opt)  # clip.step() after every opt.step()
        >>> x = torch.randn(2, 5, 16)
        >>> attn(x, x, x)[0].square().mean().backward()
        >>> opt.step()
    """

    def __init__(self, tau: float = 100.0) -> None:
        self.tau = check_number("tau", tau, 0.0, math.inf, low_open=True, high_open=True)
        self._pairs: list[_Pair] = []

    def add(
        self,
        q_weight: Tensor,
        k_weight: Tensor,
        num_heads: int,
        num_kv_heads: int | None = None,
        q_bias: Tensor | None = None,
        k_bias: Tensor | None = None,
    ) -> int:
        """Register separate q/k projections (``(heads * d_head, d_in)`` weights); returns the
        index that :meth:`record` takes."""
        heads = check_int("num_heads", num_heads, 1)
        kv = heads if num_kv_heads is None else check_int("num_kv_heads", num_kv_heads, 1)
        if heads % kv or q_weight.shape[0] % heads or k_weight.shape[0] % kv:
            raise ValueError(
                f"num_heads/num_kv_heads: {heads} query and {kv} key heads do not fit weights "
                f"of shapes {tuple(q_weight.shape)} and {tuple(k_weight.shape)}"
            )
        dtype = torch.promote_types(q_weight.dtype, torch.float32)
        logits = torch.full((heads,), -math.inf, dtype=dtype, device=q_weight.device)
        self._pairs.append(_Pair(q_weight, k_weight, heads, kv, q_bias, k_bias, logits))
        return len(self._pairs) - 1

    @torch.no_grad()
    def record(self, index: int, logits_or_q: Tensor, k: Tensor | None = None, **kw: Any) -> None:
        """Record layer ``index``'s largest logits of this forward: a ``(heads,)`` tensor, or
        ``q`` and ``k`` (``(..., heads, L, d_head)``, after any rotary embedding) whose
        :func:`max_logits` (``mask=``, ``scale=``) is taken. Kept as a running max until
        :meth:`step`; no value is read back."""
        pair = self._pairs[index]
        new = logits_or_q if k is None else max_logits(logits_or_q, k, **kw)
        torch.maximum(pair.logits, new.detach().to(pair.logits), out=pair.logits)

    def add_attention(self, module: nn.MultiheadAttention) -> int:
        """Register an ``nn.MultiheadAttention`` (its ``in_proj_weight`` rows, or its separate
        ``q_proj_weight``/``k_proj_weight``) with a forward hook that records its logits."""
        if not isinstance(module, nn.MultiheadAttention):
            raise TypeError(f"module: expected nn.MultiheadAttention, got {type(module).__name__}")
        E = module.embed_dim
        # detached views: they share the parameters' storage (the clip writes into them) and
        # carry no autograd history of their own
        if module.in_proj_weight is not None:
            w = module.in_proj_weight.detach()
            q_w, k_w = w[:E], w[E : 2 * E]
        else:
            q_w, k_w = module.q_proj_weight.detach(), module.k_proj_weight.detach()
        bias = None if module.in_proj_bias is None else module.in_proj_bias.detach()
        q_b = None if bias is None else bias[:E]
        k_b = None if bias is None else bias[E : 2 * E]
        index = self.add(q_w, k_w, module.num_heads, q_bias=q_b, k_bias=k_b)
        hook = module.register_forward_hook(self._mha_hook(index, module), with_kwargs=True)
        self._pairs[index].hooks.append(hook)
        return index

    def _mha_hook(self, index: int, module: nn.MultiheadAttention) -> Callable[..., None]:
        def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
            names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask")
            given = dict(zip(names, args)) | kwargs
            query, key = given["query"], given["key"]
            with torch.no_grad():
                pair = self._pairs[index]
                if not module.batch_first and query.dim() == 3:
                    query, key = query.transpose(0, 1), key.transpose(0, 1)  # (N, L, E)
                q = nn.functional.linear(query, pair.q_weight, pair.q_bias)
                k = nn.functional.linear(key, pair.k_weight, pair.k_bias)
                H = pair.num_heads
                q = q.unflatten(-1, (H, -1)).transpose(-3, -2)  # (N, H, L_q, d_head)
                k = k.unflatten(-1, (H, -1)).transpose(-3, -2)  # (N, H, L_k, d_head)
                allowed = _allowed(given.get("attn_mask"), given.get("key_padding_mask"), H)
                self.record(index, q, k, mask=allowed)

        return hook

    @torch.no_grad()
    def step(self) -> None:
        """Clip every registered layer with its record, then start new records."""
        for pair in self._pairs:
            qk_clip_(
                pair.q_weight,
                pair.k_weight,
                pair.logits,
                self.tau,
                pair.num_kv_heads,
                pair.q_bias,
                pair.k_bias,
            )
            pair.logits.fill_(-math.inf)

    def attach(self, optimizer: torch.optim.Optimizer) -> Any:
        """Call :meth:`step` after every ``optimizer.step()`` (a step post hook); returns the
        hook's handle (``.remove()`` detaches it)."""
        return optimizer.register_step_post_hook(lambda opt, args, kwargs: self.step())

    def remove(self) -> None:
        """Remove the forward hooks of :meth:`add_attention`."""
        for pair in self._pairs:
            for h in pair.hooks:
                h.remove()
            pair.hooks.clear()


def _allowed(
    attn_mask: Tensor | None, key_padding_mask: Tensor | None, heads: int
) -> Tensor | None:
    """nn.MultiheadAttention's masks (True or -inf: not attended) as one boolean "attended"
    mask broadcastable to (N, H, L_q, L_k)."""
    allowed = None
    if attn_mask is not None:
        blocked = attn_mask if attn_mask.dtype == torch.bool else torch.isneginf(attn_mask)
        if blocked.dim() == 3:  # (N * H, L_q, L_k)
            blocked = blocked.unflatten(0, (-1, heads))
        allowed = ~blocked
    if key_padding_mask is not None:
        kp = key_padding_mask
        blocked = kp if kp.dtype == torch.bool else torch.isneginf(kp)
        keys = ~blocked[:, None, None, :]  # (N, 1, 1, L_k)
        allowed = keys if allowed is None else allowed & keys
    return allowed
