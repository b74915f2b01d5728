"""Tiny Hugging Face models built from configs (random init, nothing downloaded): the
architectures the routing tests check and ``docs/gen_routing.py`` tabulates.

Every builder imports ``transformers`` only when called, so this module imports without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

# the layer every tiny config shares: one layer, width 32, MLP 64, 4 heads
LAYER: dict[str, Any] = dict(
    num_hidden_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=4
)
LM = dict(LAYER, vocab_size=64)  # a language model's, with a vocabulary of 64
GQA = dict(LM, num_key_value_heads=2)  # with grouped-query attention (2 key/value heads)


def tiny(model: str, config: str, **kwargs: Any) -> Callable[[], nn.Module]:
    """A builder of ``transformers.<model>`` from ``transformers.<config>(**kwargs)``."""

    def make() -> nn.Module:
        import transformers

        return getattr(transformers, model)(getattr(transformers, config)(**kwargs))

    return make


gpt2 = tiny(
    "GPT2LMHeadModel", "GPT2Config", n_layer=1, n_embd=32, n_head=4, vocab_size=64, n_positions=16
)
llama = tiny("LlamaForCausalLM", "LlamaConfig", **GQA)
bert = tiny(
    "BertForSequenceClassification",
    "BertConfig",
    **LM,
    max_position_embeddings=16,
    num_labels=3,
)
vit = tiny(
    "ViTForImageClassification", "ViTConfig", **LAYER, image_size=16, patch_size=8, num_labels=3
)
t5 = tiny(
    "T5ForConditionalGeneration",
    "T5Config",
    num_layers=1,
    num_decoder_layers=1,
    d_model=32,
    d_ff=64,
    num_heads=4,
    d_kv=8,
    vocab_size=64,
    decoder_start_token_id=0,
    pad_token_id=0,
)
mixtral = tiny("MixtralForCausalLM", "MixtralConfig", **GQA, num_local_experts=4)
qwen2_moe = tiny(
    "Qwen2MoeForCausalLM",
    "Qwen2MoeConfig",
    **GQA,
    moe_intermediate_size=16,
    shared_expert_intermediate_size=48,
    num_experts=4,
    num_experts_per_tok=2,
)
gpt_neox = tiny("GPTNeoXForCausalLM", "GPTNeoXConfig", **LM)
phi3 = tiny("Phi3ForCausalLM", "Phi3Config", **GQA, pad_token_id=0)
