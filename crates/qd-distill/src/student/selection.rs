//! From importance to a student's shape: which teacher blocks, MLP channels and attention heads
//! it keeps. Every choice keeps the teacher's order, so the kept parts compute what they did.

use qd_model::{HParams, ModelError};

/// The `n` blocks of highest total influence such that student position `i` has the attention
/// kind (sliding-window or global) of the teacher block placed there — gemma3 fixes the kind by
/// position (5 local, 1 global), and a block trained for one kind does not transfer to the
/// other. Dynamic programming over (positions filled, teacher blocks seen).
pub fn blocks_by_influence(
    influence: &[f64],
    hp: &HParams,
    n: usize,
) -> qd_model::Result<Vec<usize>> {
    let l = influence.len();
    if n == 0 || n > l {
        return Err(ModelError::Config(format!(
            "a student of {n} blocks from a teacher of {l}: choose 1 to {l}"
        )));
    }
    const NO: f64 = f64::NEG_INFINITY;
    // best[i][j]: the best total placing the first i positions with teacher blocks < j.
    let mut best = vec![vec![NO; l + 1]; n + 1];
    best[0].fill(0.0);
    for i in 1..=n {
        for j in 1..=l {
            let skip = best[i][j - 1];
            let take = if hp.is_swa(i - 1) == hp.is_swa(j - 1) && best[i - 1][j - 1] > NO {
                best[i - 1][j - 1] + influence[j - 1]
            } else {
                NO
            };
            best[i][j] = skip.max(take);
        }
    }
    if best[n][l] == NO {
        return Err(ModelError::Config(format!(
            "no {n} of the teacher's blocks follow its local/global attention pattern"
        )));
    }
    let mut out = vec![0; n];
    let (mut i, mut j) = (n, l);
    while i > 0 {
        if best[i][j] == best[i][j - 1] {
            j -= 1;
        } else {
            out[i - 1] = j - 1;
            i -= 1;
            j -= 1;
        }
    }
    Ok(out)
}

/// Indices of the `k` largest scores, in ascending index order (ties: the lower index).
pub fn top_k(scores: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

/// Keeps `keep` query heads, the same number from every KV group (grouped-query attention
/// pairs query head `h` with KV head `h / (n_head / n_head_kv)`), each group's most important.
pub fn heads_by_importance(
    scores: &[f64],
    n_head_kv: usize,
    keep: usize,
) -> qd_model::Result<Vec<usize>> {
    let n = scores.len();
    if keep > n {
        return Err(ModelError::Config(format!(
            "--heads {keep} is more than the teacher's {n} heads"
        )));
    }
    if keep < n_head_kv || !keep.is_multiple_of(n_head_kv) {
        return Err(ModelError::Config(format!(
            "--heads {keep} would remove every head of a KV group or leave groups unequal: the \
             teacher has {n_head_kv} KV group(s) of {} heads; choose a multiple of {n_head_kv} \
             from {n_head_kv} to {n}",
            n / n_head_kv
        )));
    }
    let (per, keep_per) = (n / n_head_kv, keep / n_head_kv);
    let mut out = Vec::with_capacity(keep);
    for g in 0..n_head_kv {
        let group = &scores[g * per..(g + 1) * per];
        out.extend(top_k(group, keep_per).into_iter().map(|h| g * per + h));
    }
    Ok(out)
}
