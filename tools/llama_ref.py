#!/usr/bin/env python3
"""What llama.cpp itself (through llama-cpp-python) says about a GGUF model on a text, as JSON:
its token ids, the top-k log-probabilities at the first positions, and llama-perplexity's
perplexity as tools/perplexity/perplexity.cpp computes it (whole text tokenized with the
model's special tokens, chunks of --ctx tokens whose first token is replaced by BOS only when
the vocabulary adds BOS, second half of each chunk scored). Used by the tests that check llama.cpp runs our exports."""
import argparse
import json
import math
import sys
import time

import numpy as np
import llama_cpp
from llama_cpp import Llama


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    y = x - m
    return y - np.log(np.exp(y).sum(axis=-1, keepdims=True))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--file", required=True, help="UTF-8 text")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=0, help="at most this many (0 = all)")
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--positions", type=int, default=0,
                    help="dump top-k for the first N positions of the text (0 = none)")
    ap.add_argument("--ubatch", type=int, default=0,
                    help="llama.cpp micro-batch size (default: whole context; 1 = token by token)")
    ap.add_argument("--ids-of", default=None,
                    help="a previous output of this script: also report the log-probs of its top ids")
    ap.add_argument("--kl-reference", default=None,
                    help="also compute llama-perplexity --kl-divergence's figures against this base model")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    text = open(a.file, encoding="utf-8").read()
    n_ctx = max(a.ctx, a.positions, 8)
    kw = dict(model_path=a.model, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=a.ubatch or n_ctx, logits_all=True,
              n_threads=a.threads, n_threads_batch=a.threads, verbose=False)
    llm = Llama(**kw)
    # add_bos=True means add_special: llama.cpp adds BOS only where the vocabulary says so.
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    # perplexity.cpp: `const bool add_bos = llama_vocab_get_add_bos(vocab);` and
    # `if (add_bos && j == 0) tokens[batch_start] = llama_vocab_bos(vocab);`
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(llm.model)))
    out = {"tokens": tokens, "add_bos": add_bos}

    def logits_of(seq):
        llm.reset()
        llm.eval(seq)
        return np.array(llm.scores[: len(seq)], dtype=np.float32)

    if a.positions:
        seq = tokens[: a.positions]
        lp = log_softmax(logits_of(seq))
        top = []
        for row in lp:
            ids = np.argsort(-row, kind="stable")[: a.top]
            top.append([[int(i), float(row[i])] for i in ids])
        out["top"] = top
        if a.ids_of:
            prev = json.load(open(a.ids_of))["top"]
            out["ids_of"] = [[[i, float(row[i])] for i, _ in p] for row, p in zip(lp, prev)]
        # Log-probability of each actual next token (for per-token comparison).
        out["next_logprob"] = [float(lp[i, seq[i + 1]]) for i in range(len(seq) - 1)]

    if a.ctx:
        bos = llm.token_bos()
        n_chunks = len(tokens) // a.ctx
        if a.chunks:
            n_chunks = min(n_chunks, a.chunks)
        first = a.ctx // 2
        nll, count, t0 = 0.0, 0, time.time()
        running = []
        for c in range(n_chunks):
            seq = list(tokens[c * a.ctx:(c + 1) * a.ctx])
            if add_bos:
                seq[0] = bos
            llm.reset()
            llm.eval(seq)
            # Only the scored rows, normalised in float64 sums (a [512, 262144] float64 copy
            # per chunk would cost more than llama.cpp's forward pass).
            rows = np.asarray(llm.scores[first:a.ctx - 1], dtype=np.float32)
            m = rows.max(axis=1)
            lse = m + np.log(np.exp(rows - m[:, None]).sum(axis=1, dtype=np.float64))
            targets = np.array(tokens[c * a.ctx + first + 1:(c + 1) * a.ctx])
            nll -= float((rows[np.arange(len(targets)), targets] - lse).sum())
            count += len(targets)
            running.append(math.exp(nll / count))
        out["perplexity"] = {
            "ctx": a.ctx, "n_chunks": n_chunks, "n_scored": count,
            "ppl": math.exp(nll / count) if count else None,
            "running": running, "seconds": time.time() - t0,
        }
    if a.kl_reference and a.ctx:
        base = Llama(**{**kw, "model_path": a.kl_reference})
        bos = llm.token_bos()
        n_chunks = len(tokens) // a.ctx
        if a.chunks:
            n_chunks = min(n_chunks, a.chunks)
        first = a.ctx // 2
        kls, same = [], 0
        for c in range(n_chunks):
            seq = list(tokens[c * a.ctx:(c + 1) * a.ctx])
            if add_bos:
                seq[0] = bos
            lq = log_softmax(logits_of(seq))[first:a.ctx - 1]
            base.reset()
            base.eval(seq)
            lb = log_softmax(np.array(base.scores[: len(seq)], dtype=np.float32))[first:a.ctx - 1]
            kls.extend((np.exp(lb) * (lb - lq)).sum(axis=1).tolist())
            same += int((lb.argmax(axis=1) == lq.argmax(axis=1)).sum())
        k = np.array(kls)
        out["kl"] = {"mean_kl": float(k.mean()), "kl_stderr": float(k.std(ddof=1) / math.sqrt(len(k))),
                     "same_top": same / len(k), "n_scored": len(k), "n_chunks": n_chunks}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
