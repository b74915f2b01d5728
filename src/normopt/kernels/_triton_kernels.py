"""The Triton kernel of :mod:`normopt.kernels.triton_sym` (imported only when it is used).

A module of its own because ``triton.jit`` reads ``TRITON_INTERPRET`` when it decorates,
and Triton's interpreter needs ``triton.language`` among the kernel's globals.
"""

import triton
import triton.language as tl

__all__ = ["sym_kernel"]


@triton.jit
def sym_kernel(
    X,
    D,
    C,
    M,
    K,
    sxb,
    sxm,
    sxk,
    sdb,
    sdm,
    sdn,
    scb,
    scm,
    scn,
    alpha,
    beta,
    HAS_D: tl.constexpr,
    IEEE: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # One program per tile (i, j) of the upper triangle (i <= j) of one batch entry.
    pid_i = tl.program_id(0)
    pid_j = tl.program_id(1)
    bid = tl.program_id(2)
    if pid_i <= pid_j:
        offs_i = pid_i * BLOCK + tl.arange(0, BLOCK)
        offs_j = pid_j * BLOCK + tl.arange(0, BLOCK)
        offs_k = tl.arange(0, BLOCK_K)
        xb = X + bid * sxb
        # tl.full, not tl.zeros: a builtin, so the interpreter runs it even when triton.language
        # was imported (by torch) before TRITON_INTERPRET was set.
        acc = tl.full((BLOCK, BLOCK), 0.0, tl.float32)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + offs_k
            a = tl.load(
                xb + offs_i[:, None] * sxm + kk[None, :] * sxk,
                mask=(offs_i[:, None] < M) & (kk[None, :] < K),
                other=0.0,
            )  # (BLOCK, BLOCK_K): rows i of X
            bt = tl.load(
                xb + offs_j[None, :] * sxm + kk[:, None] * sxk,
                mask=(offs_j[None, :] < M) & (kk[:, None] < K),
                other=0.0,
            )  # (BLOCK_K, BLOCK): rows j of X, transposed
            if UPCAST:
                # The interpreter's dot mishandles bf16 operands (triton 3.9); bf16 x bf16
                # products are exact in float32, so this is the same sum.
                acc += tl.dot(a.to(tl.float32), bt.to(tl.float32), input_precision="ieee")
            elif IEEE:
                acc += tl.dot(a, bt, input_precision="ieee")
            else:
                acc += tl.dot(a, bt)
        if pid_i == pid_j:
            # A diagonal tile is symmetric in exact arithmetic; make it so in floats.
            acc = 0.5 * (acc + tl.trans(acc))
        out = alpha * acc
        inside = (offs_i[:, None] < M) & (offs_j[None, :] < M)
        if HAS_D:
            d = tl.load(
                D + bid * sdb + offs_i[:, None] * sdm + offs_j[None, :] * sdn,
                mask=inside,
                other=0.0,
            )
            out += beta * d.to(tl.float32)
        res = out.to(C.dtype.element_ty)
        cb = C + bid * scb
        tl.store(cb + offs_i[:, None] * scm + offs_j[None, :] * scn, res, mask=inside)
        if pid_i != pid_j:
            # The mirror tile (j, i): C[j, i] = C[i, j], written row-major from res^T.
            tl.store(
                cb + offs_j[:, None] * scm + offs_i[None, :] * scn,
                tl.trans(res),
                mask=(offs_j[:, None] < M) & (offs_i[None, :] < M),
            )
