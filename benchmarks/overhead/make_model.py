"""A ~1.04B-parameter Llama-shaped checkpoint with random bf16 weights (seed 0), saved for vLLM.

Copied from ../shared/nsys-h100/vllm-llama1b-inproc/make_model.py (the model every llmprof device
measurement used), with the output folder as an argument.  Needs a GPU, torch and transformers.

    python3 benchmarks/overhead/make_model.py /tmp/model
"""

import sys

import torch
import transformers

out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/model"
cfg = transformers.LlamaConfig(
    vocab_size=32000,
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=2048,
    torch_dtype="bfloat16",
    tie_word_embeddings=True,
)
torch.manual_seed(0)
with torch.device("cuda"):
    m = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
m.save_pretrained(out, safe_serialization=True)
print(sum(p.numel() for p in m.parameters()) / 1e9, "B params ->", out)
