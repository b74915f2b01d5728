"""Parameter routing: which tensor of a model gets which optimizer and which norm.

:func:`classify` gives every parameter of an ``nn.Module`` a *role*:

=================  ======================================================
role               what
=================  ======================================================
``hidden``         a 2-D weight of an inner ``nn.Linear`` or Hugging Face ``Conv1D``
                   (or any 2-D tensor not recognised as something else)
``qkv``            a fused attention input projection, split into its matrices:
                   ``nn.MultiheadAttention``'s ``in_proj_weight``, a Linear/Conv1D
                   named ``c_attn``, ``qkv``, ``qkv_proj``, ``Wqkv``,
                   ``query_key_value`` or (in an attention module) ``in_proj``, or a
                   name matched by ``split_rules``
``conv``           a conv kernel (ndim >= 3 in an ``nn.ConvNd``)
``experts``        a 3-D stack of expert matrices (a 3-D parameter of an experts module,
                   or any 3-D parameter outside convs whose first dim is not 1)
``router``         an MoE router: a module named ``router``/``gate`` beside ``experts``,
                   a ``*Router``/``*TopKRouter``/``MoEGate`` module, a ``shared_expert_gate``
``embedding``      an ``nn.Embedding`` weight (also when a head is tied to it)
``token``          a learned token or position table stored as a raw parameter
                   (ViT's ``cls_token`` and ``position_embeddings``, ``pos_embed``,
                   ``mask_token``, register tokens; any 3-D parameter ``(1, n, d)``)
``head``           the output layer: a module named ``lm_head``/``head``/``classifier``/
                   ``fc_out``/``output``/``out_head``, else the last ``nn.Linear`` (also
                   when it is the only one, beside convs or embeddings: ResNet's ``fc``)
``gain``           the weight of a norm layer (LayerNorm, RMSNorm, BatchNorm, GroupNorm)
``bias``           any bias (MoE expert biases ``(E, d)`` too), any other 1-D or 0-D
                   tensor, and a 2-D raw parameter named like a bias (Swin's
                   ``relative_position_bias_table``)
=================  ======================================================

**Orientation.** ``nn.Linear`` stores ``(d_out, d_in)``; Hugging Face's ``Conv1D``
(GPT-2) stores ``(d_in, d_out)``, and expert stacks come either way: Mixtral and
Qwen2-MoE ``(E, d_out, d_in)``, GPT-OSS ``(E, d_in, d_out)`` (read from the experts
module's ``is_transposed``, set by transformers' ``use_experts_implementation``, else
guessed from its hidden size). A ``(d_in, d_out)`` tensor gets ``Route.transposed``
and its param group the key ``transposed=True``: the optimizer reads each element as
the parameter's transpose (a view made once, :func:`normopt.optim.base.split_view`),
so shape scales and norms see the true ``d_out x d_in``. Muon's polar factor commutes
with transposition, so only the scale (and any norm) changes, not the direction.

**Fused projections.** A fused q|k|v weight is orthogonalized per matrix, not as one:
split into its equal parts along the output dim (GPT-2's ``c_attn``: 3 along its last
dim; a cross-attention ``c_attn``: 2). Where the parts are not equal (grouped-query
attention fused into one ``qkv_proj``) or are interleaved per head (GPT-NeoX, BLOOM and
Falcon's ``query_key_value``), it is split per head (``d_out / head_dim`` pieces, head
counts read from the attention module or its ``config``): every piece is then one
head's q, k or v, whatever the layout. When neither is known it is left whole (the
notes say so). ``split_rules`` name the split for any other tensor, optionally with the
storage axis the parts lie along; an expert stack is split per expert (its rows), never
along the expert dim.

**Decisions for the remaining cases (preset ``"muon"``):**

- *MoE routers* go to AdamW: a router is a classifier over experts (its ``E`` logits
  meet in a softmax, like the output head's), ``E`` is small, and orthogonalizing would
  equalize the experts' score directions, which load balancing must be free to change.
- *Matrices with a dim of 1* (Qwen2-MoE's ``(1, d)`` ``shared_expert_gate``, a
  ``Linear(d, 1)``, depthwise kernels) go to AdamW: the polar factor of a rank-one
  matrix is only its normalized gradient, one scale for the whole vector.
- *Patch-embedding and stem convolutions* get Muon: their input is dense (pixels),
  so the RMS -> RMS geometry that justifies Muon for hidden layers holds; input
  embeddings get AdamW because one-hot inputs make each column its own problem.
- *Grouped convolutions* are split into their ``groups`` independent matrices
  (``(C_out / g, C_in / g * k * k)`` each); *depthwise* ones (one input channel per
  group) are then vectors and go to AdamW: their channels never mix, so orthogonalizing
  across channels would couple filters that are unrelated.

:func:`param_groups` turns roles into optimizer param groups under a
*preset*: ``"muon"`` (matrices to Muon, the rest to AdamW: K. Jordan's rule)
or ``"modular"`` (a norm per role following modular duality, SPEC A2:
Linear -> RMS->RMS, Embedding -> l1->RMS, conv -> the per-slice rule, head and router ->
RMS->l-inf, vectors -> sign); gains and biases get no weight decay (``no_decay``).
:func:`describe` prints the table.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from normopt.norms import (
    ColumnRMS,
    ConvSpectral,
    LInf,
    Norm,
    RMSToRMS,
    RowRMS,
    Transposed,
)
from normopt.optim.base import split_view

__all__ = ["Route", "classify", "param_groups", "describe", "ROLES", "PRESETS", "NO_DECAY"]

ROLES = (
    "hidden",
    "qkv",
    "conv",
    "experts",
    "router",
    "embedding",
    "token",
    "head",
    "gain",
    "bias",
)
PRESETS = ("muon", "modular")
# roles whose param groups get no weight decay by default (param_groups' no_decay)
NO_DECAY = ("gain", "bias")
_MATRIX_ROLES = ("hidden", "qkv", "conv", "experts")

_NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)
if hasattr(nn, "RMSNorm"):
    _NORM_LAYERS = (*_NORM_LAYERS, nn.RMSNorm)

_NORM_CLASS = re.compile(r"(RMS|Layer|Group|Batch)Norm(alization)?(2d)?$|Norm$")
_HEAD_NAMES = re.compile(r"(^|\.)(lm_head|head|classifier|fc_out|output|out_head)$")
# the last component of a fused q|k|v projection's module name
_FUSED_QKV = ("c_attn", "qkv", "qkv_proj", "Wqkv", "query_key_value", "to_qkv", "in_proj")
# attention modules whose fused q|k|v rows are interleaved per head (or per kv group)
_INTERLEAVED = re.compile(r"GPTNeoX|Bloom|Falcon|GPTJ|CodeGen", re.I)
_ROUTER_CLASS = re.compile(r"Router|MoEGate|TopK", re.I)
_ROUTER_NAMES = ("router", "gate", "gating", "wg", "switch")
_TOKEN_NAMES = re.compile(
    r"(^|_)(cls|mask|dist|distillation|register|query|prompt)_tokens?$"
    r"|^(absolute_)?pos(ition(al)?)?_(embed|embeds|embedding|embeddings|emb)$|^latents$"
)
_HIDDEN_ATTRS = ("hidden_size", "hidden_dim", "d_model", "embed_dim")
# name fragments of an expert stack's input (gate/up) and output (down) projections
_IN_PROJ = re.compile(r"gate|up|w1|w3|fc1|wi|in", re.I)
_OUT_PROJ = re.compile(r"down|w2|fc2|wo|out", re.I)


@dataclass
class Route:
    """The routing decision for one parameter.

    ``transposed``: stored ``(*batch, d_in, d_out)``; ``split``: the number of matrices
    fused along the output dim; ``batch_dims``: leading dims that are a batch (an expert
    stack); ``matrix``: the ``(d_out, d_in)`` of one element as the optimizer sees it
    (empty for tensors that are not matrices); ``notes``: why, where it is not obvious."""

    name: str
    shape: tuple[int, ...]
    role: str
    optimizer: str = ""  # "muon", "adamw" or "steepest"
    norm: Norm | None = None
    lr_scale: float = 1.0
    tied: list[str] = field(default_factory=list)
    split: int = 1
    batch_dims: int = 0
    transposed: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def matrix(self) -> tuple[int, ...]:
        """``(d_out, d_in)`` of one element (after batch dims, split and orientation)."""
        if self.role not in _MATRIX_ROLES or len(self.shape) - self.batch_dims < 2:
            return ()
        _, rest = split_view(self.shape, self.batch_dims, self.split, self.transposed)
        return (rest[0], math.prod(rest[1:]))

    @property
    def count(self) -> int:
        """How many elements (``matrix``-shaped matrices) the tensor is: experts x splits."""
        return math.prod(self.shape[: self.batch_dims]) * self.split

    def remarks(self, quote: str = "") -> list[str]:
        """What :func:`describe` says in its notes column: tied names (each wrapped in
        ``quote``), the split and its storage axis, the batch, then ``notes``."""
        out = []
        if self.tied:
            out.append("tied: " + ", ".join(f"{quote}{n}{quote}" for n in self.tied))
        if self.split > 1:
            axis = self.batch_dims + (1 if self.transposed else 0)
            out.append(f"split into {self.split} along dim {axis}")
        if self.batch_dims:
            out.append(f"batch of {self.shape[0]}")
        return out + self.notes


def _is_conv1d(mod: nn.Module) -> bool:
    # transformers.pytorch_utils.Conv1D (GPT-2, GPT, CTRL...): weight (nx, nf) = (d_in, d_out);
    # recognised by name and attributes so that normopt does not import transformers
    return type(mod).__name__ == "Conv1D" and hasattr(mod, "nf") and hasattr(mod, "nx")


def _linear_like(mod: nn.Module) -> bool:
    return isinstance(mod, nn.Linear) or _is_conv1d(mod)


def _head_module(model: nn.Module, head: str | None) -> str | None:
    if head is not None:
        return head
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    named = [n for n in linears if _HEAD_NAMES.search(n)]
    if named:
        return named[-1]
    if len(linears) > 1:
        return linears[-1]
    if len(linears) == 1:
        # the only Linear is the head when something else carries the features (ResNet's
        # fc after convs); a model that is one Linear keeps it as a hidden matrix
        last = linears[0]
        prefix = f"{last}." if last else ""
        for n, p in model.named_parameters():
            if p.ndim >= 2 and not n.startswith(prefix):
                return last
    return None


def _attr(mod: nn.Module | None, names: tuple[str, ...]) -> int | None:
    """The first positive int among ``mod``'s attributes ``names``, then its ``config``'s."""
    if mod is None:
        return None
    for src in (mod, getattr(mod, "config", None)):
        if src is None:
            continue
        for n in names:
            try:
                v = getattr(src, n, None)
            except Exception:  # a config may refuse some reads (per-layer attributes)
                v = None
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
    return None


def _head_dim(attn: nn.Module | None, width: int) -> int | None:
    hd = _attr(attn, ("head_dim", "head_size", "attention_head_size", "d_kv"))
    if hd is not None:
        return hd
    heads = _attr(attn, ("num_heads", "num_attention_heads", "n_head", "n_heads"))
    hidden = _attr(attn, _HIDDEN_ATTRS) or width
    return hidden // heads if heads and hidden % heads == 0 else None


def _fused_split(mod_name: str, d_out: int, d_in: int, attn: nn.Module | None) -> tuple[int, str]:
    """``(split, note)`` for a fused q|k|v projection of ``d_out x d_in`` whose attention
    module (its parent) is ``attn``: equal contiguous parts where the sizes say so, one piece
    per head where the parts are unequal or interleaved, else 1 (left whole)."""
    cls = type(attn).__name__ if attn is not None else ""
    head_dim = _head_dim(attn, d_in)
    heads = _attr(attn, ("num_heads", "num_attention_heads", "n_head", "n_heads"))
    kv_heads = _attr(attn, ("num_key_value_heads", "num_kv_heads", "kv_n_heads", "n_head_kv"))
    pieces = d_out // head_dim if head_dim and d_out % head_dim == 0 else 1
    if _INTERLEAVED.search(cls):
        if pieces > 1:
            return pieces, "q|k|v interleaved per head: one piece per head's q, k, v"
        return 1, "fused q|k|v interleaved per head, head size unknown: not split"
    unequal = heads is not None and kv_heads is not None and kv_heads != heads
    if not unequal:
        width = _attr(attn, ("embed_dim", "hidden_size", "all_head_size")) or d_in
        if d_out % width == 0 and d_out // width in (2, 3):
            return d_out // width, ""
        if d_out % d_in == 0 and d_out // d_in in (2, 3):
            return d_out // d_in, ""
    if pieces > 1:
        return pieces, "unequal q|k|v (grouped-query): one piece per head's q, k, v"
    return 1, "fused q|k|v of unknown parts: not split"


def _expert_transposed(mod: nn.Module, attr: str, p: Tensor) -> bool:
    """Whether an expert stack is stored ``(E, d_in, d_out)``."""
    flag = getattr(mod, "is_transposed", None)  # transformers' use_experts_implementation
    if isinstance(flag, bool):
        return flag
    hidden = _attr(mod, _HIDDEN_ATTRS)
    if hidden is None:
        return False
    r, c = p.shape[-2], p.shape[-1]
    if _OUT_PROJ.search(attr):  # d_out is the hidden size
        return c == hidden and r != hidden
    if _IN_PROJ.search(attr):  # d_in is the hidden size
        return r == hidden and c != hidden
    return False


def _is_experts_module(mod: nn.Module, attr: str) -> bool:
    return (
        "expert" in type(mod).__name__.lower()
        or "expert" in attr.lower()
        or hasattr(mod, "num_experts")
    )


def _is_router(mod: nn.Module, mod_name: str, model_modules: dict[str, nn.Module]) -> bool:
    if _ROUTER_CLASS.search(type(mod).__name__):
        return True
    last = mod_name.rsplit(".", 1)[-1]
    if last == "shared_expert_gate":
        return True
    if last in _ROUTER_NAMES:
        parent = model_modules.get(mod_name.rsplit(".", 1)[0] if "." in mod_name else "")
        return parent is not None and any("expert" in n for n, _ in parent.named_children())
    return False


def _parse_rule(pattern: str, rule: Any) -> tuple[int, int | None]:
    if isinstance(rule, tuple | list) and len(rule) == 2:
        k, axis = rule
    else:
        k, axis = rule, None
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"split_rules: {pattern!r} -> {rule!r}: expected k >= 1 or (k, axis)")
    if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
        raise ValueError(f"split_rules: {pattern!r} -> {rule!r}: the axis must be an int")
    return k, axis


def classify(
    model: nn.Module,
    head: str | None = None,
    split_rules: dict[str, int | tuple[int, int]] | None = None,
    overrides: dict[str, str] | None = None,
) -> list[Route]:
    """Give every trainable parameter of ``model`` a role (see the module docstring).

    Args:
        model: any ``nn.Module``.
        head: the module name of the output layer, when the default guess (a
            module named like a head, else the last ``nn.Linear``) is wrong.
        split_rules: regular expression on parameter names -> ``k`` or ``(k, axis)``:
            the tensor holds ``k`` matrices side by side along its output dim (e.g.
            ``{r"\\.qkv\\.weight$": 3}``). ``axis`` names the storage dim they lie along:
            the output dim of the layout (0 for ``nn.Linear``, the last for ``Conv1D``;
            for an expert stack, a dim after the expert dim: each expert is split, never
            the expert dim). On a tensor of unknown layout, an axis equal to its last dim
            declares it stored ``(d_in, d_out)``. Splitting a known input dim is an error.
            A rule replaces the automatic split.
        overrides: regular expression on parameter names -> role, applied last.

    Parameters shared between modules (a head tied to the embedding) appear
    once, under their first name, with the other names in ``Route.tied``;
    frozen parameters (``requires_grad=False``) are left out.
    """
    rules = {pat: _parse_rule(pat, rule) for pat, rule in (split_rules or {}).items()}
    overrides = dict(overrides or {})
    for role in overrides.values():
        if role not in ROLES:
            raise ValueError(f"overrides: unknown role {role!r}; expected one of {list(ROLES)}")
    head_name = _head_module(model, head)
    modules = dict(model.named_modules())
    if head is not None and head not in modules:
        raise ValueError(f"head: no module named {head!r} in the model")

    owner: dict[int, tuple[str, nn.Module, str]] = {}  # id(param) -> (module name, module, attr)
    aliases: dict[int, list[str]] = {}
    for mod_name, mod in model.named_modules():
        for attr, p in mod.named_parameters(recurse=False):
            if p is None:
                continue
            full = f"{mod_name}.{attr}" if mod_name else attr
            if id(p) in owner:
                aliases[id(p)].append(full)
                continue
            owner[id(p)] = (mod_name, mod, attr)
            aliases[id(p)] = []

    routes: list[Route] = []
    for full, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mod_name, mod, attr = owner[id(p)]
        tied_names = aliases[id(p)]
        role = _role(p, mod, mod_name, attr, head_name, tied_names, modules)
        route = Route(name=full, shape=tuple(p.shape), role=role, tied=list(tied_names))
        known_layout = _layout(route, p, mod, attr)
        parent = modules.get(mod_name.rsplit(".", 1)[0] if "." in mod_name else "")
        _auto_split(route, mod, mod_name, parent)
        for pattern, (k, axis) in rules.items():
            if re.search(pattern, full):
                _apply_rule(route, pattern, k, axis, known_layout)
        for pattern, forced in overrides.items():
            if re.search(pattern, full):
                route.role = forced
        route.batch_dims = 1 if route.role == "experts" else 0
        if route.role not in _MATRIX_ROLES:
            route.split = 1
        if route.role not in _MATRIX_ROLES or len(route.shape) - route.batch_dims != 2:
            route.transposed = False  # only matrices have an orientation to honour
        if route.transposed:
            route.notes.insert(0, "stored (d_in, d_out)")
        routes.append(route)
    return routes


def _layout(route: Route, p: Tensor, mod: nn.Module, attr: str) -> bool:
    """Set ``route.transposed`` from the module type; True when the layout is known."""
    if route.role in ("hidden", "qkv", "head") and _is_conv1d(mod) and attr == "weight":
        route.transposed = True
        return True
    if route.role == "experts" and p.ndim == 3:
        route.transposed = _expert_transposed(mod, attr, p)
        return isinstance(getattr(mod, "is_transposed", None), bool) or route.transposed
    return isinstance(mod, nn.Linear | nn.MultiheadAttention | nn.modules.conv._ConvNd)


def _auto_split(route: Route, mod: nn.Module, mod_name: str, parent: nn.Module | None) -> None:
    if route.role == "qkv" and isinstance(mod, nn.MultiheadAttention):
        route.split = 3
        return
    if route.role == "conv" and isinstance(mod, nn.modules.conv._ConvNd) and mod.groups > 1:
        route.split = mod.groups  # output channels are ordered by group
        route.notes.append(f"{mod.groups} groups")
        return
    if route.role == "qkv":
        d_in, d_out = route.shape if route.transposed else route.shape[::-1]
        route.split, note = _fused_split(mod_name, d_out, d_in, parent)
        if note:
            route.notes.append(note)


def _apply_rule(route: Route, pattern: str, k: int, axis: int | None, known: bool) -> None:
    shape = route.shape
    b = 1 if route.role == "experts" else 0
    if len(shape) - b < 2:
        raise ValueError(
            f"split_rules: {pattern!r} splits {route.name} (shape {shape}), which is not a "
            "matrix" + (" after its expert dim" if b else "")
        )
    out_axis = b + 1 if route.transposed else b
    if axis is not None:
        a = axis + len(shape) if axis < 0 else axis
        if not 0 <= a < len(shape):
            raise ValueError(f"split_rules: axis {axis} is out of range for {route.name} {shape}")
        if b and a == 0:
            raise ValueError(
                f"split_rules: {pattern!r} names the expert dim of {route.name}; a rule splits "
                "each expert's matrices (axis 1 or 2)"
            )
        if a != out_axis:
            if known or len(shape) - b != 2 or a != len(shape) - 1:
                raise ValueError(
                    f"split_rules: {pattern!r} splits {route.name} (shape {shape}) along axis "
                    f"{axis}, its input dim; only the output dim (axis {out_axis}) can be split"
                )
            route.transposed, out_axis = True, a  # declares a (d_in, d_out) layout
    if shape[out_axis] % k:
        raise ValueError(
            f"split_rules: {pattern!r} splits {route.name} (shape {shape}) into {k} along "
            f"axis {out_axis}, which it does not divide"
        )
    if route.role != "experts":
        route.role = "qkv"
    route.split = k
    route.notes = [n for n in route.notes if "q|k|v" not in n and "groups" not in n]


def _role(
    p: Tensor,
    mod: nn.Module,
    mod_name: str,
    attr: str,
    head_name: str | None,
    tied: list[str],
    modules: dict[str, nn.Module],
) -> str:
    if p.ndim <= 1:
        # torch's norm layers, and the RMSNorm/LayerNorm classes models define themselves
        # (LlamaRMSNorm, T5LayerNorm)
        norm_layer = isinstance(mod, _NORM_LAYERS) or _NORM_CLASS.search(type(mod).__name__)
        return "gain" if norm_layer and attr in ("weight", "scale", "gamma") else "bias"
    if isinstance(mod, nn.Embedding | nn.EmbeddingBag):
        return "embedding"
    if isinstance(mod, nn.MultiheadAttention) and attr == "in_proj_weight":
        return "qkv"
    if isinstance(mod, nn.modules.conv._ConvNd):
        return "conv"
    if _is_router(mod, mod_name, modules):
        return "router"
    if _linear_like(mod):
        tied_to_head = any(n.rsplit(".", 1)[0] == head_name for n in tied)
        if mod_name == head_name or tied_to_head:
            return "head"
        last = mod_name.rsplit(".", 1)[-1]
        if attr == "weight" and last in _FUSED_QKV:
            parent = modules.get(mod_name.rsplit(".", 1)[0] if "." in mod_name else "")
            pcls = type(parent).__name__.lower() if parent is not None else ""
            if last != "in_proj" or "attn" in pcls or "attention" in pcls:
                return "qkv"
        return "hidden"
    # a raw parameter of some module
    if _TOKEN_NAMES.search(attr):
        return "token"
    if p.ndim == 2 and "bias" in attr.lower():
        return "bias"
    if p.ndim == 2 and any(q.ndim == 3 for q in mod.parameters(recurse=False)):
        return "bias"  # beside an expert stack: one vector per expert (E x d)
    if p.ndim == 3:
        if _is_experts_module(mod, attr) or p.shape[0] > 1:
            return "experts"
        return "token"  # (1, n, d): a table added to the input, not a stack
    return "hidden" if p.ndim == 2 else "conv"


def _modular_norm(route: Route) -> Norm:
    if route.role in ("hidden", "qkv", "experts"):
        return RMSToRMS()
    if route.role == "embedding":
        return Transposed(ColumnRMS())  # nn.Embedding stores (vocab, dim): one row per token
    if route.role in ("head", "router"):
        return RowRMS()
    if route.role == "conv":
        return ConvSpectral() if len(route.shape) == 4 else RMSToRMS()
    return LInf()


def _assign(routes: list[Route], preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"preset: unknown preset {preset!r}; expected one of {list(PRESETS)}")
    for r in routes:
        if preset == "muon":
            m = r.matrix
            r.optimizer = "muon" if m and min(m) > 1 else "adamw"
            if m and min(m) == 1:
                r.notes.append("a vector in disguise (a dim of 1): AdamW")
            if r.optimizer == "muon":
                r.lr_scale = math.sqrt(max(1.0, m[0] / m[1]))  # Muon's default rule (Jordan)
        else:
            r.optimizer = "steepest"
            r.norm = _modular_norm(r)


def _check_no_decay(no_decay: Any) -> None:
    if not isinstance(no_decay, tuple | list) or any(r not in ROLES for r in no_decay):
        raise ValueError(
            f"no_decay: expected a tuple of roles from {list(ROLES)}, got {no_decay!r}"
        )


def param_groups(
    model: nn.Module,
    preset: str = "muon",
    head: str | None = None,
    split_rules: dict[str, int | tuple[int, int]] | None = None,
    overrides: dict[str, str] | None = None,
    no_decay: tuple[str, ...] = NO_DECAY,
    **group_options: Any,
) -> list[dict[str, Any]]:
    """Param groups for a model: one group per (optimizer, role, norm, split, batch dims,
    orientation).

    Each group holds ``(name, tensor)`` pairs (so messages can name tensors) and
    the keys the optimizers read: ``use_muon`` (preset ``"muon"``), ``norm``
    (preset ``"modular"``), ``split``, ``batch_dims``, ``transposed`` (tensors stored
    ``(d_in, d_out)``) and ``role``.
    ``group_options`` are copied into every group.

    ``no_decay``: the roles whose groups get ``weight_decay=0.0`` (default: norm gains
    and biases, as Hugging Face's Trainer and most recipes do; embeddings and the head
    are decayed). Measured, it made no difference (within 0.0003 nats on two tasks:
    BENCHMARKS.md, "Muon's AdamW part: lr and decay"), so the common convention decides;
    ``no_decay=()`` decays every tensor at its group's ``weight_decay``.

    Example:
        >>> import torch, normopt
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
        >>> [g["role"] for g in normopt.param_groups(model)]
        ['hidden', 'bias', 'head']
    """
    _check_no_decay(no_decay)
    routes = classify(model, head=head, split_rules=split_rules, overrides=overrides)
    _assign(routes, preset)
    params = dict(model.named_parameters())
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in routes:
        matrix = r.optimizer != "adamw"
        split, batch_dims = (r.split, r.batch_dims) if matrix else (1, 0)
        transposed = r.transposed and matrix
        key = (r.optimizer, r.role, repr(r.norm), split, batch_dims, transposed)
        g = groups.get(key)
        if g is None:
            g = groups[key] = {"params": [], "role": r.role, **group_options}
            if preset == "muon":
                g["use_muon"] = r.optimizer == "muon"
            else:
                g["norm"] = r.norm
            if split > 1:
                g["split"] = split
            if batch_dims:
                g["batch_dims"] = batch_dims
            if transposed:
                g["transposed"] = True
            if r.role in no_decay:
                g["weight_decay"] = 0.0
        g["params"].append((r.name, params[r.name]))
    return list(groups.values())


def describe(
    model: nn.Module,
    preset: str = "muon",
    head: str | None = None,
    split_rules: dict[str, int | tuple[int, int]] | None = None,
    overrides: dict[str, str] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    no_decay: tuple[str, ...] = NO_DECAY,
) -> str:
    """A table of every trainable parameter: name, shape, role, optimizer, norm, the matrix
    the optimizer sees (``d_out x d_in`` of one element, in its true orientation, times the
    number of elements: experts and split parts), lr scale, decay (``no`` for the roles in
    ``no_decay``, as :func:`param_groups` gives them ``weight_decay=0``), and notes (tied
    names, splits, orientation: ``stored (d_in, d_out)``).

    With ``optimizer`` (a normopt optimizer built on ``model``), the optimizer and lr-scale
    columns say what that optimizer really does: each group's ``algorithm`` and the factor
    its step multiplies ``lr`` by (``optimizer.lr_scale(p)``: Muon's ``adjust_lr`` rule in
    force), and the decay column each group's ``weight_decay``, not what the routing preset
    would choose.

    Example:
        >>> import torch, normopt
        >>> print(normopt.describe(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))))  # doctest: +SKIP
    """
    _check_no_decay(no_decay)
    routes = classify(model, head=head, split_rules=split_rules, overrides=overrides)
    _assign(routes, preset)
    decay = {r.name: ("no" if r.role in no_decay else "yes") for r in routes}
    if optimizer is not None:
        decay = _from_optimizer(routes, model, optimizer)
    rows = [("name", "shape", "role", "optimizer", "norm", "matrix", "lr scale", "decay", "notes")]
    for r in routes:
        norm = (
            repr(r.norm)
            if r.norm is not None
            else ("spectral (polar)" if r.optimizer == "muon" else "-")
        )
        # one element as the optimizer sees it: (d_out x d_in), times the number of them
        m = r.matrix
        matrix = "-" if not m else (f"{r.count}x" if r.count > 1 else "") + f"({m[0]}x{m[1]})"
        rows.append(
            (
                r.name,
                "x".join(map(str, r.shape)),
                r.role,
                r.optimizer,
                norm,
                matrix,
                f"{r.lr_scale:.3g}",
                decay[r.name],
                "; ".join(r.remarks()),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    counts: dict[str, int] = {}
    for r in routes:
        counts[r.optimizer] = counts.get(r.optimizer, 0) + math.prod(r.shape)
    total = sum(counts.values()) or 1
    summary = ", ".join(
        f"{k}: {v:,} params ({100 * v / total:.1f}%)" for k, v in sorted(counts.items())
    )
    lines.append(f"\n{len(routes)} tensors; {summary}")
    return "\n".join(lines)


def _from_optimizer(
    routes: list[Route], model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, str]:
    """Overwrite each route's optimizer and lr scale with what ``optimizer`` does to it;
    return each tensor's ``weight_decay`` as text."""
    params = dict(model.named_parameters())
    owner = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    lr_scale = getattr(optimizer, "lr_scale", None)
    decay = {}
    for r in routes:
        p = params[r.name]
        group = owner.get(id(p))
        if group is None:
            r.optimizer, r.lr_scale = "(not in the optimizer)", 0.0
            decay[r.name] = "-"
            continue
        r.optimizer = str(group.get("algorithm", type(optimizer).__name__))
        r.lr_scale = float(lr_scale(p)) if callable(lr_scale) else 1.0
        wd = group.get("weight_decay")
        decay[r.name] = "-" if wd is None else f"{float(wd):.3g}"
    return decay
