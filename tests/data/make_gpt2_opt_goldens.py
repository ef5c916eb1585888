# Makes the GPT-2 / OPT goldens in tests/data with Hugging Face transformers (run on the device
# machine, which has torch; outputs go to $OUT and are copied into tests/data):
#   mkdir -p .devdata && cp -r ../shared/models/gpt2-7m-wiki .devdata/
#   python tests/data/make_gpt2_opt_goldens.py
# 1. gpt2-7m-wiki logits recomputed on the CPU in float32 from the saved fp16 weights (every 4th of
#    the 64 golden positions), and their distance to ../shared's golden.
# 2. Two small OPT-shaped models with random weights (pre-LN like OPT-125m; post-LN with
#    project_in/out like OPT-350m), saved in float16, with the logits of 32 tokens computed in
#    float32 from the saved weights (ONLY=name makes just one of them). They use gpt2-7m-wiki's
#    vocabulary; tests feed token ids directly.
import os
import numpy as np
import torch
from transformers import AutoModelForCausalLM, OPTConfig, OPTForCausalLM

out = os.environ.get("OUT", ".")
g = ".devdata/gpt2-7m-wiki"
toks = np.fromfile(g + "/golden_tokens_64.i32", dtype=np.int32)
gold = np.fromfile(g + "/golden_logits_64x8192.f32", dtype=np.float32).reshape(64, -1)
if "ONLY" not in os.environ:
    m = AutoModelForCausalLM.from_pretrained(g, dtype=torch.float32).eval()
    with torch.no_grad():
        lg = m(torch.tensor(toks[None].astype(np.int64))).logits[0].numpy()
    rel = np.linalg.norm(lg - gold, axis=1) / np.linalg.norm(gold, axis=1)
    print("gpt2-7m-wiki: transformers CPU fp32 vs shared golden, max rel row error %.3g" % rel.max())
    lg[::4].astype(np.float32).tofile(out + "/gpt2_7m_hf_cpu_fp32_logits_rows0to60step4_16x8192.f32")

ids = torch.tensor(toks[None, :32].astype(np.int64))
for name, kw in [("opt-tiny-preln", dict(do_layer_norm_before=True, word_embed_proj_dim=64)),
                 ("opt-tiny-postln-proj", dict(do_layer_norm_before=False, word_embed_proj_dim=32))]:
    torch.manual_seed(1234)
    cfg = OPTConfig(vocab_size=8192, hidden_size=64, num_hidden_layers=2, ffn_dim=128, num_attention_heads=4,
                    max_position_embeddings=128, init_std=0.2, bos_token_id=0, eos_token_id=0, pad_token_id=1,
                    **kw)
    model = OPTForCausalLM(cfg).eval()
    d = os.path.join(out, name)
    if os.environ.get("ONLY", name) != name:
        continue
    model.half().save_pretrained(d)
    os.remove(os.path.join(d, "generation_config.json"))
    m2 = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    with torch.no_grad():
        l2 = m2(ids).logits[0].numpy()
    toks[:32].astype(np.int32).tofile(os.path.join(d, "golden_tokens_32.i32"))
    l2.astype(np.float32).tofile(os.path.join(d, "golden_logits_32x8192.f32"))
    s = np.sort(l2, axis=1)
    print(name, "params", sum(p.numel() for p in model.parameters()), "min top1-top2 margin %.3g" % (s[:, -1] - s[:, -2]).min(),
          os.listdir(d))
