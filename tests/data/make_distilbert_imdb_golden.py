# Regenerates tests/data/distilbert_imdb_hf_predictions.json: transformers' predictions for every
# review of IMDB test with distilbert-5m-imdb at max 256 tokens (float32, TF32 off), the logits of
# every 10th review, and the accuracies. Run on the device machine:
#   mkdir -p .devdata/enc && cp -r ../shared/models/distilbert-5m-imdb .devdata/enc/
#   cp ../shared/datasets/imdb/test.tsv .devdata/enc/imdb_test.tsv
#   OUT=/some/dir python tests/data/make_distilbert_imdb_golden.py
import json
import os

import torch
from transformers import AutoTokenizer, DistilBertForSequenceClassification

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = "cuda" if torch.cuda.is_available() else "cpu"
d = ".devdata/enc/distilbert-5m-imdb"
tok = AutoTokenizer.from_pretrained(d)
m = DistilBertForSequenceClassification.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").to(dev).eval()
lines = open(".devdata/enc/imdb_test.tsv", encoding="utf-8").read().split("\n")
rows = [l.rsplit("\t", 1) for l in lines[1:] if l.strip()]
labels = [1 if r[1] == "pos" else 0 for r in rows]
enc = [tok(r[0], truncation=True, max_length=256)["input_ids"] for r in rows]
order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
logits = [None] * len(enc)
with torch.no_grad():
    for s in range(0, len(order), 256):
        idx = order[s:s + 256]
        b = tok.pad({"input_ids": [enc[i] for i in idx]}, return_tensors="pt").to(dev)
        out = m(**b).logits.float().cpu()
        for k, i in enumerate(idx):
            logits[i] = out[k].tolist()
pred = [int(l[1] > l[0]) for l in logits]
correct = [int(p == y) for p, y in zip(pred, labels)]
every10 = list(range(0, len(rows), 10))
res = {
    "max_len": 256, "device": dev, "examples": len(rows),
    "accuracy": sum(correct) / len(rows),
    "every10_accuracy": sum(correct[i] for i in every10) / len(every10),
    "predictions": "".join(str(p) for p in pred),
    "every10_logits": [logits[i] for i in every10],
    "truncated": sum(len(tok(r[0])["input_ids"]) > 256 for r in rows),
}
print({k: v for k, v in res.items() if k not in ("predictions", "every10_logits")}, flush=True)
json.dump(res, open(os.environ["OUT"] + "/distilbert_imdb_hf_predictions.json", "w"))
