"""QK-clip (Kimi K2's MuonClip): crafted heads above tau come back to tau, the others stay."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import normopt
from normopt.optim import max_logits, qk_clip_

F64 = torch.float64


def _heads_logits(q_w, k_w, x, heads, q_b=None, k_b=None):
    """Reference: the largest logit q_i . k_j / sqrt(d_head) of every head, one by one."""
    q = nn.functional.linear(x, q_w, q_b)  # (L, heads * d)
    k = nn.functional.linear(x, k_w, k_b)
    d = q.shape[-1] // heads
    out = []
    for h in range(heads):
        qh, kh = q[:, h * d : (h + 1) * d], k[:, h * d : (h + 1) * d]
        out.append(float((qh @ kh.T).max()) / math.sqrt(d))
    return torch.tensor(out, dtype=F64)


def _crafted(heads=4, d=4, d_in=8, big=(0, 2), seed=0):
    """q/k weights whose heads in ``big`` have logits far above 100 on ``x``."""
    gen = torch.Generator().manual_seed(seed)
    q_w = 0.3 * torch.randn(heads * d, d_in, dtype=F64, generator=gen)
    k_w = 0.3 * torch.randn(heads * d, d_in, dtype=F64, generator=gen)
    for h in big:
        q_w[h * d : (h + 1) * d] *= 20.0 + 5 * h
        k_w[h * d : (h + 1) * d] *= 10.0
    x = torch.randn(6, d_in, dtype=F64, generator=gen)
    return q_w, k_w, x


def test_heads_above_tau_are_clipped_to_tau_others_untouched():
    tau, heads, d = 100.0, 4, 4
    q_w, k_w, x = _crafted(heads, d)
    before = _heads_logits(q_w, k_w, x, heads)
    assert before[0] > 2 * tau and before[2] > 2 * tau and before[1] < tau and before[3] < tau
    q0, k0 = q_w.clone(), k_w.clone()
    clip = normopt.QKClip(tau)
    i = clip.add(q_w, k_w, num_heads=heads)
    q = nn.functional.linear(x, q_w).unflatten(-1, (heads, d)).transpose(0, 1)  # (H, L, d)
    k = nn.functional.linear(x, k_w).unflatten(-1, (heads, d)).transpose(0, 1)
    clip.record(i, q, k)
    clip.step()
    after = _heads_logits(q_w, k_w, x, heads)
    for h in (0, 2):
        assert abs(float(after[h]) - tau) < 1e-9 * tau  # back to tau exactly (to round-off)
        rows = slice(h * d, (h + 1) * d)
        f = math.sqrt(tau / float(before[h]))
        torch.testing.assert_close(q_w[rows], f * q0[rows], rtol=1e-15, atol=0)
        torch.testing.assert_close(k_w[rows], f * k0[rows], rtol=1e-15, atol=0)
    for h in (1, 3):
        rows = slice(h * d, (h + 1) * d)
        assert torch.equal(q_w[rows], q0[rows]) and torch.equal(k_w[rows], k0[rows])
        assert after[h] == before[h]
    # the record starts over: a second step with nothing recorded changes nothing
    q1 = q_w.clone()
    clip.step()
    assert torch.equal(q_w, q1)


def test_qk_clip_function_takes_recorded_logits_and_biases():
    tau, heads, d = 50.0, 3, 2
    q_w, k_w, x = _crafted(heads, d, d_in=5, big=(1,), seed=3)
    q_b, k_b = torch.randn(heads * d, dtype=F64), torch.randn(heads * d, dtype=F64)
    before = _heads_logits(q_w, k_w, x, heads, q_b, k_b)
    assert before[1] > tau and before[0] < tau and before[2] < tau
    f = qk_clip_(q_w, k_w, before.clone(), tau, q_bias=q_b, k_bias=k_b)
    after = _heads_logits(q_w, k_w, x, heads, q_b, k_b)
    assert abs(float(after[1]) - tau) < 1e-9 * tau
    assert after[0] == before[0] and after[2] == before[2]
    assert f[0] == 1 and f[2] == 1 and f[1] < 1


def test_grouped_query_attention_scales_a_group_by_its_largest_logit():
    tau, heads, kv, d = 100.0, 4, 2, 3
    gen = torch.Generator().manual_seed(1)
    q_w = torch.randn(heads * d, 6, dtype=F64, generator=gen)
    k_w = torch.randn(kv * d, 6, dtype=F64, generator=gen)
    q0, k0 = q_w.clone(), k_w.clone()
    logits = torch.tensor([400.0, 150.0, 20.0, 99.0], dtype=F64)  # group 0: max 400
    qk_clip_(q_w, k_w, logits, tau, num_kv_heads=kv)
    torch.testing.assert_close(q_w[: 2 * d], 0.5 * q0[: 2 * d], rtol=1e-15, atol=0)
    torch.testing.assert_close(k_w[:d], 0.5 * k0[:d], rtol=1e-15, atol=0)
    assert torch.equal(q_w[2 * d :], q0[2 * d :]) and torch.equal(k_w[d:], k0[d:])


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_hook_records_and_clips(batch_first):
    torch.manual_seed(0)
    E, H, tau = 16, 4, 30.0
    mha = nn.MultiheadAttention(E, H, batch_first=batch_first).double()
    d = E // H
    with torch.no_grad():
        mha.in_proj_weight[:d] *= 40.0  # head 0 of W_q
        mha.in_proj_weight[E : E + d] *= 40.0  # head 0 of W_k
    x = torch.randn(2, 7, E, dtype=F64)
    xin = x if batch_first else x.transpose(0, 1)
    qw = mha.in_proj_weight[:E].detach().clone()
    kw = mha.in_proj_weight[E : 2 * E].detach().clone()
    qb, kb = mha.in_proj_bias[:E].detach(), mha.in_proj_bias[E : 2 * E].detach()
    ref = torch.stack([_heads_logits(qw, kw, x[b], H, qb, kb) for b in range(2)]).amax(0)
    assert ref[0] > tau and bool((ref[1:] < tau).all())

    opt = normopt.Muon(mha.parameters(), lr=0.0, adamw_lr=0.0)  # a step that moves nothing
    clip = normopt.QKClip(tau)
    clip.add_attention(mha)
    clip.attach(opt)
    mha(xin, xin, xin)[0].square().mean().backward()
    opt.step()
    qw2 = mha.in_proj_weight[:E].detach()
    kw2 = mha.in_proj_weight[E : 2 * E].detach()
    qb2, kb2 = mha.in_proj_bias[:E].detach(), mha.in_proj_bias[E : 2 * E].detach()
    after = torch.stack([_heads_logits(qw2, kw2, x[b], H, qb2, kb2) for b in range(2)]).amax(0)
    assert abs(float(after[0]) - tau) < 1e-9 * tau
    assert torch.equal(after[1:], ref[1:])
    assert torch.equal(qw2[d:], qw[d:]) and torch.equal(kw2[d:], kw[d:])
    assert torch.equal(mha.in_proj_weight[2 * E :], mha.in_proj_weight[2 * E :])  # v untouched
    clip.remove()


def test_masked_pairs_do_not_count():
    q = torch.zeros(1, 2, 2)
    k = torch.zeros(1, 2, 2)
    q[0, 0, 0], k[0, 1, 0] = 10.0, 10.0  # the one large logit is q_0 . k_1
    mask = torch.tensor([[True, False], [True, True]])  # q_0 may not see k_1
    assert float(max_logits(q, k)) == pytest.approx(100 / math.sqrt(2))
    assert float(max_logits(q, k, mask=mask)) == 0.0


def test_no_host_reads_on_meta():
    q_w = torch.empty(8, 4, device="meta")
    k_w = torch.empty(8, 4, device="meta")
    clip = normopt.QKClip(100.0)
    i = clip.add(q_w, k_w, num_heads=2)
    clip.record(i, torch.empty(2, 3, 4, device="meta"), torch.empty(2, 3, 4, device="meta"))
    clip.step()  # would raise on a .item() or bool(tensor)


def test_bad_arguments():
    w = torch.zeros(6, 4)
    with pytest.raises(ValueError, match="tau"):
        normopt.QKClip(tau=0.0)
    with pytest.raises(ValueError, match="num_heads"):
        normopt.QKClip().add(w, w, num_heads=4)
    with pytest.raises(ValueError, match="num_kv_heads"):
        qk_clip_(w, w, torch.zeros(3), 1.0, num_kv_heads=2)
    with pytest.raises(TypeError, match="MultiheadAttention"):
        normopt.QKClip().add_attention(nn.Linear(2, 2))


def test_non_finite_records_leave_their_heads_alone():
    q_w, k_w = torch.randn(6, 4, dtype=F64), torch.randn(6, 4, dtype=F64)
    q0, k0 = q_w.clone(), k_w.clone()
    qk_clip_(q_w, k_w, torch.tensor([math.inf, math.nan, -math.inf], dtype=F64), 1.0)
    assert torch.equal(q_w, q0) and torch.equal(k_w, k0)
