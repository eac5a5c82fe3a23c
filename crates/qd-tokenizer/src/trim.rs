//! A vocabulary cut to what a corpus uses, for students whose embedding and LM head hold only
//! those rows (Gemma 3 270M's 262,144-entry vocabulary is 64 % of its parameters).
//!
//! Kept: every token the tokenizer produces on the corpus, every piece its merges form on the
//! way to those tokens (so that tokenizing the corpus with the trimmed vocabulary performs the
//! same merges and gives the same pieces), the control, unknown and byte-fallback tokens, the
//! special ids (BOS, EOS, UNK, PAD) and, for byte-level BPE, every single-character piece (its
//! base alphabet). Ids keep their order; scores, types and (gpt2) the merges among kept pieces
//! keep their values and ranks.
//!
//! Why the intermediate pieces suffice: both merge procedures apply, inside a word, the best
//! pair present (SentencePiece: highest score of the joined piece, leftmost first; gpt2 BPE:
//! lowest merge rank). Pairs that were never applied changed nothing, so removing the pieces
//! they would have formed leaves the applied merges, in the same order, the best ones still.
//! And a final token's own merge history depends only on its characters (pairs across its
//! edges were never applied), so it is found by merging the token's text alone.
//! [`trim`] ends by re-tokenizing the corpus with the trimmed vocabulary ([`verify`]) and fails
//! on any difference.

use std::collections::{BTreeSet, HashMap};

use crate::error::{Result, TokenizerError};
use crate::vocab::{GgufVocab, TokenType};
use crate::GgufTokenizer;

/// A trimmed vocabulary and the ids it kept.
#[derive(Debug, Clone)]
pub struct Trimmed {
    /// The vocabulary the trimmed model carries (special ids renumbered).
    pub vocab: GgufVocab,
    /// `kept[new] = old`, ascending.
    pub kept: Vec<u32>,
}

impl Trimmed {
    /// `old → new` for every kept id.
    pub fn new_ids(&self) -> HashMap<u32, u32> {
        renumbering(&self.kept)
    }

    /// How many of `ids` (the untrimmed tokenizer's) fall outside the kept set.
    pub fn outside(&self, ids: &[u32]) -> usize {
        ids.iter()
            .filter(|i| self.kept.binary_search(i).is_err())
            .count()
    }
}

/// Trims `v` (the vocabulary `tok` was built from) to what tokenizing `corpus` uses, keeping
/// `also` too (ids the file names elsewhere, e.g. an end-of-turn token), and checks as
/// [`verify`] does that the corpus tokenizes the same with the result (its untrimmed tokens
/// computed once for both).
pub fn trim(v: &GgufVocab, tok: &GgufTokenizer, corpus: &str, also: &[u32]) -> Result<Trimmed> {
    if corpus.trim().is_empty() {
        return Err(TokenizerError::Inconsistent(
            "the corpus to trim the vocabulary on is empty".into(),
        ));
    }
    let n = v.tokens.len();
    let mut keep: BTreeSet<u32> = BTreeSet::new();
    for (i, ty) in v.types.iter().enumerate() {
        let base = match v.model.as_str() {
            // Byte-level BPE's alphabet: every single-character piece.
            "gpt2" => v.tokens[i].chars().count() == 1,
            _ => false,
        };
        if base
            || matches!(
                ty,
                TokenType::Control | TokenType::Unknown | TokenType::Byte
            )
        {
            keep.insert(i as u32);
        }
    }
    keep.extend([v.bos, v.eos, v.unk, v.pad].into_iter().flatten());
    let ids = tok.encode(corpus, false)?;
    let used: BTreeSet<u32> = ids.iter().copied().collect();
    if let Some(id) = also.iter().chain(&used).find(|&&id| id as usize >= n) {
        return Err(TokenizerError::Inconsistent(format!(
            "token id {id} is outside the vocabulary of {n}"
        )));
    }
    keep.extend(also);
    let history = History::new(v)?;
    for &id in &used {
        keep.insert(id);
        if matches!(
            v.types[id as usize],
            TokenType::Normal | TokenType::Undefined
        ) {
            history.formed(&v.tokens[id as usize], &mut keep);
        }
    }
    let kept: Vec<u32> = keep.into_iter().collect();
    let t = Trimmed {
        vocab: restrict(v, &kept),
        kept,
    };
    check(&t, &ids, tok, corpus)?;
    Ok(t)
}

/// Re-tokenizes `corpus` with the trimmed vocabulary and checks it gives `original`'s ids
/// mapped through the kept table; the error names the first difference.
pub fn verify(t: &Trimmed, original: &GgufTokenizer, corpus: &str) -> Result<()> {
    check(t, &original.encode(corpus, false)?, original, corpus)
}

/// [`verify`] with the corpus's untrimmed tokens `want` already at hand.
fn check(t: &Trimmed, want: &[u32], original: &GgufTokenizer, corpus: &str) -> Result<()> {
    let trimmed = GgufTokenizer::from_vocab(t.vocab.clone())?;
    let map = t.new_ids();
    let got = trimmed.encode(corpus, false)?;
    let mapped: Vec<Option<u32>> = want.iter().map(|i| map.get(i).copied()).collect();
    if let Some(pos) = (0..want.len().max(got.len()))
        .find(|&p| mapped.get(p).copied().flatten() != got.get(p).copied())
    {
        let piece = |ids: &[u32], tk: &GgufTokenizer| {
            ids.get(pos)
                .and_then(|&i| tk.token_text(i))
                .unwrap_or_else(|| "(end)".into())
        };
        return Err(TokenizerError::Inconsistent(format!(
            "the trimmed vocabulary tokenizes the corpus differently at token {pos}: {:?} \
             instead of {:?} ({} tokens against {})",
            piece(&got, &trimmed),
            piece(want, original),
            got.len(),
            want.len()
        )));
    }
    Ok(())
}

/// The vocabulary restricted to `kept` (ascending old ids), special ids renumbered.
fn restrict(v: &GgufVocab, kept: &[u32]) -> GgufVocab {
    let new = renumbering(kept);
    let pick = |i: &u32| *i as usize;
    let tokens: Vec<String> = kept.iter().map(|i| v.tokens[pick(i)].clone()).collect();
    let present: std::collections::HashSet<&str> = tokens.iter().map(String::as_str).collect();
    let merges = v
        .merges
        .iter()
        .filter(|m| {
            m.split_once(' ').is_some_and(|(l, r)| {
                present.contains(l) && present.contains(r) && present.contains(&*format!("{l}{r}"))
            })
        })
        .cloned()
        .collect();
    let remap = |id: Option<u32>| id.and_then(|i| new.get(&i).copied());
    GgufVocab {
        model: v.model.clone(),
        pre: v.pre.clone(),
        scores: kept.iter().map(|i| v.scores[pick(i)]).collect(),
        types: kept.iter().map(|i| v.types[pick(i)]).collect(),
        merges,
        bos: remap(v.bos),
        eos: remap(v.eos),
        unk: remap(v.unk),
        pad: remap(v.pad),
        add_bos: v.add_bos,
        add_eos: v.add_eos,
        add_space_prefix: v.add_space_prefix,
        tokens,
    }
}

/// `old → new` for ascending old ids `kept`.
fn renumbering(kept: &[u32]) -> HashMap<u32, u32> {
    kept.iter()
        .enumerate()
        .map(|(n, &o)| (o, n as u32))
        .collect()
}

/// How a piece is formed from its characters by the vocabulary's merges.
enum History<'v> {
    /// SentencePiece-BPE: piece → (id, score).
    Spm(HashMap<&'v str, (u32, f32)>),
    /// Byte-level BPE: (left, right) → rank, and piece → id.
    Bpe {
        ranks: HashMap<(&'v str, &'v str), usize>,
        ids: HashMap<&'v str, u32>,
    },
}

impl<'v> History<'v> {
    fn new(v: &'v GgufVocab) -> Result<Self> {
        let ids = v
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i as u32));
        Ok(match v.model.as_str() {
            "gpt2" => {
                let mut ranks = HashMap::with_capacity(v.merges.len());
                for (r, m) in v.merges.iter().enumerate() {
                    let (l, rt) = m.split_once(' ').ok_or_else(|| {
                        TokenizerError::Inconsistent(format!("merge {m:?} has no space"))
                    })?;
                    ranks.entry((l, rt)).or_insert(r);
                }
                History::Bpe {
                    ranks,
                    ids: ids.collect(),
                }
            }
            _ => History::Spm(ids.zip(&v.scores).map(|((t, i), &s)| (t, (i, s))).collect()),
        })
    }

    /// Adds the ids of every piece formed while merging `piece`'s characters alone (its
    /// characters included, where they are pieces).
    fn formed(&self, piece: &str, keep: &mut BTreeSet<u32>) {
        // Symbols as byte ranges of `piece`.
        let mut sym: Vec<(usize, usize)> = piece
            .char_indices()
            .map(|(i, c)| (i, i + c.len_utf8()))
            .collect();
        let id_of = |s: &str| match self {
            History::Spm(m) => m.get(s).map(|p| p.0),
            History::Bpe { ids, .. } => ids.get(s).copied(),
        };
        for &(a, b) in &sym {
            keep.extend(id_of(&piece[a..b]));
        }
        loop {
            // The best adjacent pair: SPM by the joined piece's score (ties: leftmost), BPE by
            // the merge's rank.
            let mut best: Option<(usize, f32)> = None;
            for k in 0..sym.len().saturating_sub(1) {
                let (l, r) = (sym[k], sym[k + 1]);
                let prio = match self {
                    History::Spm(m) => m.get(&piece[l.0..r.1]).map(|p| p.1),
                    History::Bpe { ranks, .. } => ranks
                        .get(&(&piece[l.0..l.1], &piece[r.0..r.1]))
                        .map(|&rank| -(rank as f32)),
                };
                if let Some(p) = prio {
                    if best.is_none_or(|(_, b)| p > b) {
                        best = Some((k, p));
                    }
                }
            }
            let Some((k, _)) = best else { break };
            sym[k].1 = sym[k + 1].1;
            sym.remove(k + 1);
            keep.extend(id_of(&piece[sym[k].0..sym[k].1]));
        }
    }
}
