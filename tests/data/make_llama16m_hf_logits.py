# Regenerates tests/data/llama16m_hf_cpu_fp32_logits_rows0to60step4_16x8192.f32 and cross-checks the
# perplexity protocol, with Hugging Face transformers (run on the device machine, which has torch):
#   mkdir -p .devdata && cp -r ../shared/models/llama-16m-wiki ../shared/datasets/wikitext-2/wiki.test.raw .devdata/
#   python tests/data/make_llama16m_hf_logits.py     (writes into $OUT)
# Measured 2026-11-23 with torch 2.11.0+cu130, transformers 5.17.0: see docs/goldens.md.
import os
import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

d = ".devdata/llama-16m-wiki"
out = os.environ.get("OUT", ".")
toks = np.fromfile(d + "/golden_tokens_64.i32", dtype=np.int32)
m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
with torch.no_grad():
    lg = m(torch.tensor(toks[None].astype(np.int64))).logits[0].numpy()
lg[::4].astype(np.float32).tofile(out + "/llama16m_hf_cpu_fp32_logits_rows0to60step4_16x8192.f32")

# Perplexity on WikiText-2 test, ctx 512 (BOS + 511), both second-half readings.
torch.backends.cuda.matmul.allow_tf32 = False
dev = "cuda" if torch.cuda.is_available() else "cpu"
m = m.to(dev)
ids = AutoTokenizer.from_pretrained(d)(open(".devdata/wiki.test.raw").read(), add_special_tokens=False)["input_ids"]
print("tokens", len(ids))
nll = {"all": [], "targets>=256": [], "logit rows>=256 (llama.cpp)": []}
with torch.no_grad():
    for w in range(len(ids) // 511):
        x = torch.tensor([[1] + ids[w * 511:(w + 1) * 511]], device=dev)
        lp = torch.log_softmax(m(x).logits[0].double(), -1)
        nl = -lp[:-1].gather(1, x[0, 1:, None])[:, 0]  # row r predicts token r + 1
        nll["all"].append(nl)
        nll["targets>=256"].append(nl[255:])
        nll["logit rows>=256 (llama.cpp)"].append(nl[256:])
for name, v in nll.items():
    v = torch.cat(v)
    print(name, len(v), float(torch.exp(v.mean())))
