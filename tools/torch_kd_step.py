"""The seed's distillation step in PyTorch + transformers, for the speed/memory comparison of the
README (trainer issue): a Gemma-3-270M-shaped teacher and a 6-block student of the same width, both
f32 with random weights, B x T tokens per step, soft KL at temperature T scaled by T^2 plus hard CE
(alpha 0.5), AdamW. Prints one JSON line: tokens/s over the timed steps and the peak RSS.

Run through tools/torch-compare.sh, which installs torch and transformers from PyPI.
"""

import argparse
import json
import resource
import time

import torch
import torch.nn.functional as F
from transformers import Gemma3ForCausalLM, Gemma3TextConfig


def gemma3_270m(layers: int) -> Gemma3TextConfig:
    # The teacher GGUF's metadata (gemma3.*): 640 wide, 4 query heads and 1 KV head of 256,
    # FFN 2048, vocabulary 262 144, every sixth layer global, sliding window 512.
    return Gemma3TextConfig(
        vocab_size=262144,
        hidden_size=640,
        intermediate_size=2048,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        query_pre_attn_scalar=256,
        sliding_window=512,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        attn_implementation="eager",
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--student-layers", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=2.0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    teacher = Gemma3ForCausalLM(gemma3_270m(18)).eval()
    student = Gemma3ForCausalLM(gemma3_270m(args.student_layers)).train()
    opt = torch.optim.AdamW(student.parameters(), lr=3e-4, weight_decay=0.01)
    t, a = args.temperature, args.alpha

    def step() -> float:
        ids = torch.randint(0, 262144, (args.batch, args.seq + 1))
        x, y = ids[:, :-1], ids[:, 1:]
        with torch.no_grad():
            t_logits = teacher(input_ids=x).logits
        s_logits = student(input_ids=x).logits
        v = s_logits.shape[-1]
        # The seed's loss without its bugs: KL summed over the vocabulary, averaged over tokens
        # ("batchmean" on [tokens, vocab]), labels shifted by one.
        kd = F.kl_div(
            F.log_softmax(s_logits.reshape(-1, v) / t, dim=-1),
            F.log_softmax(t_logits.reshape(-1, v) / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        ce = F.cross_entropy(s_logits.reshape(-1, v), y.reshape(-1))
        loss = a * t * t * kd + (1 - a) * ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    secs = time.perf_counter() - start
    tokens = args.steps * args.batch * args.seq
    print(
        json.dumps(
            {
                "tool": f"pytorch {torch.__version__} / transformers",
                "batch": args.batch,
                "seq": args.seq,
                "threads": args.threads,
                "steps": args.steps,
                "tokens_per_second": tokens / secs,
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "last_loss": loss,
            }
        )
    )


if __name__ == "__main__":
    main()
