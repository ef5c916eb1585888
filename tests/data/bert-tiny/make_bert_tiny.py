# Makes tests/data/bert-tiny (a BERT-shaped BertForSequenceClassification with random weights) and
# the goldens of the encoder tests, with Hugging Face transformers in float32 on the CPU (run on the
# device machine, which has torch + transformers):
#   mkdir -p .devdata/enc && cp -r ../shared/models/distilbert-5m-imdb .devdata/enc/
#   cp ../shared/datasets/sst2/dev.tsv .devdata/enc/sst2_dev.tsv
#   cp tests/data/bert-tiny/vocab.txt .devdata/enc/bert_tiny_vocab.txt   (first 1024 lines of distilbert's)
#   OUT=/some/dir python tests/data/bert-tiny/make_bert_tiny.py
# Writes $OUT/bert-tiny/{config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
# goldens.json} and $OUT/encoder_goldens.json (WordPiece variants on distilbert's vocabulary, the
# distilbert SST-2 logits recomputed here).
import json
import os
import shutil
import tempfile
import traceback

import numpy as np
import torch
import transformers
from transformers import (AutoTokenizer, BertConfig, BertForSequenceClassification, BertTokenizer,
                          DistilBertForSequenceClassification)

torch.set_num_threads(8)
out = os.environ["OUT"]
enc = ".devdata/enc"
os.makedirs(out + "/bert-tiny", exist_ok=True)
print("torch", torch.__version__, "transformers", transformers.__version__, flush=True)
report = {"torch": torch.__version__, "transformers": transformers.__version__}


def wordpiece_from_vocab(vocab_txt, **kw):
    """The tokenizer transformers builds from a folder holding vocab.txt + tokenizer_config.json."""
    d = tempfile.mkdtemp()
    shutil.copy(vocab_txt, d + "/vocab.txt")
    json.dump({"tokenizer_class": "BertTokenizer", **kw}, open(d + "/tokenizer_config.json", "w"))
    try:
        return AutoTokenizer.from_pretrained(d)
    except Exception:
        traceback.print_exc()
        return BertTokenizer(vocab_file=vocab_txt, **kw)


def f32list(a):
    return [float(x) for x in np.asarray(a, dtype=np.float32).reshape(-1)]


# ---- bert-tiny -------------------------------------------------------------------------------------
try:
    torch.manual_seed(1234)
    cfg = BertConfig(vocab_size=1024, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=64, type_vocab_size=2,
                     hidden_act="gelu", layer_norm_eps=1e-12, initializer_range=0.2, pad_token_id=0,
                     num_labels=3, id2label={0: "negative", 1: "neutral", 2: "positive"},
                     label2id={"negative": 0, "neutral": 1, "positive": 2},
                     problem_type="single_label_classification")
    m = BertForSequenceClassification(cfg).eval()
    # Random init leaves biases at 0 and LayerNorms at (1, 0): perturb them so the test sees them.
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(0.2 * torch.randn_like(p))
    tmp = tempfile.mkdtemp()
    m.save_pretrained(tmp)
    tok = wordpiece_from_vocab(enc + "/bert_tiny_vocab.txt", do_lower_case=True)
    tok.save_pretrained(tmp)
    print("saved:", sorted(os.listdir(tmp)), flush=True)
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]:
        if os.path.exists(tmp + "/" + f):
            shutil.copy(tmp + "/" + f, out + "/bert-tiny/" + f)
    m = BertForSequenceClassification.from_pretrained(tmp, dtype=torch.float32, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(tmp)
    a = ["The movie was great!", "terrible, awful acting and a boring plot", "okay",
         "I didn't expect the ending; it was surprisingly good.", "Ünïcödé café naïve résumé"]
    b = ["I liked it a lot", "no", "it was fine I guess, nothing special at all really", "sure", "yes"]
    g = {}
    with torch.no_grad():
        for kind, enc_in in [("single", tok(a, padding=True, return_tensors="pt")),
                             ("pair", tok(a, b, padding=True, return_tensors="pt"))]:
            lg = m(**enc_in).logits
            alone = []
            for i in range(len(a)):
                e1 = tok(a[i], b[i]) if kind == "pair" else tok(a[i])
                alone.append(m(**{k: torch.tensor([v]) for k, v in e1.items()}).logits[0])
            alone = torch.stack(alone)
            g[kind] = {"input_ids": enc_in["input_ids"].tolist(), "attention_mask": enc_in["attention_mask"].tolist(),
                       "token_type_ids": enc_in["token_type_ids"].tolist(), "logits": f32list(lg),
                       "logits_alone": f32list(alone),
                       "batch_vs_alone_max_abs": float((lg - alone).abs().max())}
            print(kind, "batch vs alone max abs", g[kind]["batch_vs_alone_max_abs"], flush=True)
        # The same weights with the tanh GELU ("gelu_new").
        cfg2 = BertConfig.from_pretrained(tmp)
        cfg2.hidden_act = "gelu_new"
        m2 = BertForSequenceClassification.from_pretrained(tmp, config=cfg2, dtype=torch.float32,
                                                           attn_implementation="eager").eval()
        e = tok(a, b, padding=True, return_tensors="pt")
        g["pair_gelu_new_logits"] = f32list(m2(**e).logits)
    g["texts_a"], g["texts_b"] = a, b
    g["tokenize"] = {t: tok(t)["input_ids"] for t in a + b}
    json.dump(g, open(out + "/bert-tiny/goldens.json", "w"))
except Exception:
    traceback.print_exc()

# ---- WordPiece variants on distilbert's vocabulary ---------------------------------------------------
texts = [
    "Héllo WÖRLD ÅNGSTRÖM NaÏvE CaFÉ",
    "İstanbul ΟΔΟΣ straße ǅungla ǆ ﬁne ﬀ ² ½",
    "ctrl\u0000char\u0007s\u200bzero\ufeffwidth\ufffdrepl\u00adsoft",
    "nbsp\u00a0here\u3000ideographic\u2028line\u000bvt\u000cff\u0085nel\u2003em",
    "東京タワー and 한국어 and ไทย and 中文字",
    "$100 ^_^ `code` ~tilde~ {braces} 50% a&b c|d e\\f @user #tag",
    "« quotes » „German“ ‘single’ — dash … ellipsis ¿qué? ¡sí! · •",
    "a" * 100 + " " + "b" * 101 + " " + "é" * 101,
    "supercalifragilisticexpialidocious unbelievably antidisestablishmentarianism",
    "[CLS][SEP] [cls] [MASK]x [PAD] x[UNK]y",
    "Hello[SEP]world",
    "e\u0301 combining \u1e9b\u0323 Å vs A\u030a x\u0301\u0301\u0301",
    "emoji 🙂👍🏽 flags 🇫🇷 𝐀𝐁 math",
    "tab\there\r\nwindows\rmac",
    "I'm \"quoted\" (paren) [bracket] <angle> don't",
    "",
    " \t\n ",
]
variants = {
    "lower": dict(do_lower_case=True),
    "cased": dict(do_lower_case=False),
    "lower_keep_accents": dict(do_lower_case=True, strip_accents=False),
    "cased_strip_accents": dict(do_lower_case=False, strip_accents=True),
    "lower_no_chinese": dict(do_lower_case=True, tokenize_chinese_chars=False),
}
eg = {"texts": texts, "variants": {}}
for name, kw in variants.items():
    try:
        t = wordpiece_from_vocab(enc + "/distilbert-5m-imdb/vocab.txt", **kw)
        ids = [t(x)["input_ids"] for x in texts]
        eg["variants"][name] = {"kwargs": kw, "ids": ids,
                                "decoded": [t.decode(i, skip_special_tokens=True) for i in ids],
                                "decoded_with_special": [t.decode(i, skip_special_tokens=False) for i in ids],
                                "normalizer": json.loads(t.backend_tokenizer.to_str())["normalizer"]}
    except Exception:
        traceback.print_exc()

# Truncation (HF truncation=True, max_length=N keeps [CLS] ... [SEP]) with the shipped tokenizer.
try:
    t = AutoTokenizer.from_pretrained(enc + "/distilbert-5m-imdb")
    long = "this film is one of the best i have ever seen and i would watch it again " * 3
    eg["truncation"] = {"text": long, "max_len": {str(n): t(long, truncation=True, max_length=n)["input_ids"]
                                                  for n in [2, 3, 8, 17]}}
except Exception:
    traceback.print_exc()

# ---- distilbert-5m-imdb: the shared SST-2 golden recomputed here (CPU, fp32, eager) ----------------------
try:
    d = enc + "/distilbert-5m-imdb"
    t = AutoTokenizer.from_pretrained(d)
    m = DistilBertForSequenceClassification.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    rows = [l.rstrip("\n").split("\t") for l in open(enc + "/sst2_dev.tsv", encoding="utf-8").read().splitlines()[1:]]
    shared = np.fromfile(d + "/golden_sst2_dev_first32_logits_32x2.f32", dtype=np.float32).reshape(32, 2)
    with torch.no_grad():
        alone = np.stack([m(**t(r[0], truncation=True, max_length=256, return_tensors="pt")).logits[0].numpy()
                          for r in rows[:32]])
        e = t([r[0] for r in rows[:32]], truncation=True, max_length=256, padding=True, return_tensors="pt")
        batch = m(**e).logits.numpy()
        correct = 0
        for i in range(0, len(rows), 64):
            chunk = rows[i:i + 64]
            e = t([r[0] for r in chunk], truncation=True, max_length=256, padding=True, return_tensors="pt")
            pred = m(**e).logits.argmax(-1).numpy()
            correct += int(sum(int(p) == int(r[1]) for p, r in zip(pred, chunk)))
    rel = np.abs(alone - shared) / np.maximum(np.abs(shared), 1e-6)
    eg["distilbert_sst2"] = {"logits_alone_cpu": f32list(alone), "logits_batch_cpu": f32list(batch),
                             "max_abs_vs_shared": float(np.abs(alone - shared).max()),
                             "max_rel_vs_shared": float(rel.max()),
                             "rel_l2_vs_shared": float(np.linalg.norm(alone - shared) / np.linalg.norm(shared)),
                             "batch_vs_alone_max_abs": float(np.abs(batch - alone).max()),
                             "sst2_dev_accuracy": correct / len(rows), "rows": len(rows)}
    print({k: v for k, v in eg["distilbert_sst2"].items() if not k.startswith("logits")}, flush=True)
except Exception:
    traceback.print_exc()
json.dump(eg, open(out + "/encoder_goldens.json", "w"), ensure_ascii=False)
print("done", flush=True)
