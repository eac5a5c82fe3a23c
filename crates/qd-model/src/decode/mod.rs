//! Inference without the graph: a prompt in one batch ([`Decoder::prefill`], in `prefill`),
//! then generation one token at a time ([`Decoder::step`]) with every buffer allocated once and
//! one thread hand-off per token.
//!
//! Through candle, a generated token is ~200 ops, each allocating its output and handing work
//! to the thread pool and back; on 2 cores those hand-offs alone were ~17 % of `tg128`. Here a
//! token runs as one program on all threads (`team`): the products through the packed kernels
//! (Q8_0, and Q4_0/Q5_0 widened to it; Q4_K, Q6_K) at the CPU's level (`isa`: AVX-512 VNNI or
//! scalar), shared out by row tiles, the attention by query heads, the rest on one thread
//! between barriers, into buffers and key/value rings sized when the decoder is made. It
//! applies to quantized models on the CPU whose weights are all of those types
//! ([`Decoder::new`] says `None` otherwise, and callers keep the graph path).
//!
//! The values are the graph path's, computed the same way (ggml's activation quantization,
//! f16 keys, values and attention operands, its GELU table) up to the order of f32 sums.

mod attention;
mod matvec;
mod ops;
mod prefill;
pub use prefill::MatmulInput;
mod team;

use std::cell::UnsafeCell;

use crate::block::{Activation, Block};
use crate::error::{ModelError, Result};
use crate::hparams::{Arch, HParams, RopeStyle};
use crate::kernels::isa::Isa;
use crate::linear::{Embedding, Linear};
use crate::transformer::Transformer;

use attention::LayerKv;
use matvec::{Input, Job, Mat, Split};
use ops::EmbedRows;

struct Layer<'m> {
    q: Mat<'m>,
    k: Mat<'m>,
    v: Mat<'m>,
    o: Mat<'m>,
    gate: Mat<'m>,
    up: Mat<'m>,
    down: Mat<'m>,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    bo: Option<Vec<f32>>,
    attn_norm: Vec<f32>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    post_attn_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    post_ffn_norm: Option<Vec<f32>>,
    /// Index into the decoder's distinct RoPE tables.
    rope: usize,
}

/// A RoPE kind (base, scaling) and its frequencies.
struct RopeKind {
    spec: crate::rope::RopeSpec,
    inv: Vec<f32>,
}

/// What a token writes: the residual stream, each step's outputs, the caches.
struct State {
    x: Vec<f32>,
    h: Vec<f32>,
    tmp: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    down: Vec<f32>,
    logits: Vec<f32>,
    scores: Vec<f32>,
    /// Per RoPE kind: the angles at the current position.
    cos: Vec<Vec<f32>>,
    sin: Vec<Vec<f32>>,
    kv: Vec<LayerKv>,
    /// Inputs of the four shared products of a block and of the LM head.
    in_attn: Input,
    in_o: Input,
    in_ffn: Input,
    in_down: Input,
}

/// Where the shared products write (raw, so that threads can write disjoint rows).
#[derive(Clone, Copy)]
struct Outs {
    q: *mut f32,
    k: *mut f32,
    v: *mut f32,
    o: *mut f32,
    gate: *mut f32,
    up: *mut f32,
    down: *mut f32,
    logits: *mut f32,
    att: *mut f32,
    /// Per query head, a row of `keys` attention weights.
    scores: *mut f32,
    keys: usize,
}

/// The state shared by the team's threads; the barriers order every access (see `step`).
struct Shared(UnsafeCell<State>);
// SAFETY: thread 0 alone writes between barriers; the shared products write disjoint rows.
unsafe impl Sync for Shared {}
// SAFETY: the raw pointers point into `State`'s own buffers, and the threads that share a
// product write disjoint rows through them (`Split` hands each chunk to one thread).
unsafe impl Sync for Outs {}
// SAFETY: as for `Sync`: the buffers outlive the team's run, which joins every thread.
unsafe impl Send for Outs {}

/// Single-token generation for one quantized model (see the module's note).
pub struct Decoder<'m> {
    /// The kernels' level (this CPU runs it: checked in `new_at`).
    isa: Isa,
    hp: HParams,
    act: Activation,
    ggml: bool,
    embed: EmbedRows<'m>,
    embed_scale: Option<f32>,
    layers: Vec<Layer<'m>>,
    output_norm: Vec<f32>,
    head: Mat<'m>,
    ropes: Vec<RopeKind>,
    team: team::Team,
    state: Shared,
    pos: usize,
    capacity: usize,
}

fn vec_of(t: &candle_core::Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?)
}

fn opt_vec(t: &Option<candle_core::Tensor>) -> Result<Option<Vec<f32>>> {
    t.as_ref().map(vec_of).transpose()
}

/// The sizes a block's matrices and buffers are made of: width, head size, value size, heads,
/// KV heads, MLP width.
fn dims(hp: &HParams) -> (usize, usize, usize, usize, usize, usize) {
    (
        hp.n_embd,
        hp.head_dim,
        hp.value_dim,
        hp.n_head,
        hp.n_head_kv,
        hp.n_ff,
    )
}

/// The kernels' view of a quantized linear weight of `rows × cols`; `None` where its type is
/// not one the kernels cover or its shape is not the expected one.
fn mat_of<'m, L: Linear>(l: &'m L, rows: usize, cols: usize) -> Option<Mat<'m>> {
    let mat = Mat::of(l.as_quantized()?)?;
    (mat.rows() == rows && mat.cols() == cols).then_some(mat)
}

/// A linear weight's bias, if it has one.
fn bias_of<L: Linear>(l: &L) -> Result<Option<Vec<f32>>> {
    match l.as_quantized() {
        Some(q) => opt_vec(&q.bias),
        None => Ok(None),
    }
}

/// The index of `spec` among the distinct RoPE kinds, adding it if new.
fn rope_index(ropes: &mut Vec<RopeKind>, spec: crate::rope::RopeSpec) -> usize {
    if let Some(i) = ropes.iter().position(|r| r.spec == spec) {
        return i;
    }
    ropes.push(RopeKind {
        inv: spec.inv_freqs(),
        spec,
    });
    ropes.len() - 1
}

impl<'m> Layer<'m> {
    /// Block `b`'s weights for the kernels; `None` where a matrix is not one they cover.
    fn of<L: Linear>(b: &'m Block<L>, hp: &HParams, rope: usize) -> Result<Option<Self>> {
        let (d, hd, vd, nh, nkv, ff) = dims(hp);
        let mats = (
            mat_of(&b.q, nh * hd, d),
            mat_of(&b.k, nkv * hd, d),
            mat_of(&b.v, nkv * vd, d),
            mat_of(&b.o, d, nh * vd),
            mat_of(&b.gate, ff, d),
            mat_of(&b.up, ff, d),
            mat_of(&b.down, d, ff),
        );
        let (Some(q), Some(k), Some(v), Some(o), Some(gate), Some(up), Some(down)) = mats else {
            return Ok(None);
        };
        Ok(Some(Layer {
            q,
            k,
            v,
            o,
            gate,
            up,
            down,
            bq: bias_of(&b.q)?,
            bk: bias_of(&b.k)?,
            bv: bias_of(&b.v)?,
            bo: bias_of(&b.o)?,
            attn_norm: vec_of(&b.attn_norm)?,
            q_norm: opt_vec(&b.q_norm)?,
            k_norm: opt_vec(&b.k_norm)?,
            post_attn_norm: opt_vec(&b.post_attn_norm)?,
            ffn_norm: vec_of(&b.ffn_norm)?,
            post_ffn_norm: opt_vec(&b.post_ffn_norm)?,
            rope,
        }))
    }
}

impl State {
    /// Buffers for one token of a model of `hp` with `n_ropes` RoPE kinds and these caches.
    fn new(hp: &HParams, n_ropes: usize, kv: Vec<LayerKv>) -> Self {
        let (d, hd, vd, nh, nkv, ff) = dims(hp);
        let max_keys = kv.iter().map(LayerKv::slots).max().unwrap_or(1);
        let half = hp.rope_dim / 2;
        State {
            x: vec![0.0; d],
            h: vec![0.0; d],
            tmp: vec![0.0; d.max(hd)],
            q: vec![0.0; nh * hd],
            k: vec![0.0; nkv * hd],
            v: vec![0.0; nkv * vd],
            att: vec![0.0; nh * vd],
            o: vec![0.0; d],
            gate: vec![0.0; ff],
            up: vec![0.0; ff],
            down: vec![0.0; d],
            logits: vec![0.0; hp.vocab_size],
            scores: vec![0.0; nh * max_keys],
            cos: vec![vec![0.0; half]; n_ropes],
            sin: vec![vec![0.0; half]; n_ropes],
            kv,
            in_attn: Input::default(),
            in_o: Input::default(),
            in_ffn: Input::default(),
            in_down: Input::default(),
        }
    }
}

impl<'m> Decoder<'m> {
    /// A decoder for up to `capacity` positions at [`Isa::active`]'s level, or `None` where it
    /// does not apply (weights not quantized in a type the kernels cover, not on the CPU, or a
    /// CPU whose best level is the scalar one — unless the scalar level was asked for: there
    /// candle's graph is 1.9× faster in a portable build, while a build for the CPU puts the
    /// scalar level 1.3× / 1.04× ahead on this machine; docs/performance.md). Weights are
    /// repacked on the first call for a model and kept in it. Runs on the current rayon pool.
    pub fn new<L: Linear, E: Embedding>(
        m: &'m Transformer<L, E>,
        capacity: usize,
    ) -> Result<Option<Self>> {
        let isa = Isa::active();
        if isa == Isa::Scalar && !Isa::forced() {
            return Ok(None);
        }
        Self::new_at(isa, m, capacity)
    }

    /// As [`Decoder::new`] with the kernels at level `isa`; `None` also where this CPU does
    /// not run it.
    pub fn new_at<L: Linear, E: Embedding>(
        isa: Isa,
        m: &'m Transformer<L, E>,
        capacity: usize,
    ) -> Result<Option<Self>> {
        if !m.device.is_cpu() || capacity == 0 || !isa.runs_here() {
            return Ok(None);
        }
        let hp = m.hp.clone();
        let mut ropes: Vec<RopeKind> = Vec::new();
        let mut layers = Vec::with_capacity(m.blocks.len());
        for (il, b) in m.blocks.iter().enumerate() {
            let rope = rope_index(&mut ropes, m.rope_spec(il));
            let Some(layer) = Layer::of(b, &hp, rope)? else {
                return Ok(None);
            };
            layers.push(layer);
        }
        let Some(head) = mat_of(&m.lm_head, hp.vocab_size, hp.n_embd) else {
            return Ok(None);
        };
        let Some(embed) = m.embed.quantized_table().and_then(EmbedRows::new) else {
            return Ok(None);
        };
        if embed.rows() != hp.vocab_size {
            return Ok(None);
        }
        let kv: Vec<LayerKv> = m
            .blocks
            .iter()
            .map(|b| {
                let window = if b.swa { hp.sliding_window } else { None };
                LayerKv::new(hp.n_head_kv, hp.head_dim, hp.value_dim, window, capacity)
            })
            .collect();
        let state = State::new(&hp, ropes.len(), kv);
        let embed_scale = match hp.arch {
            Arch::Gemma3 => Some((hp.n_embd as f64).sqrt() as f32),
            _ => None,
        };
        Ok(Some(Self {
            isa,
            act: m.activation(),
            ggml: m.ggml_numerics,
            embed,
            embed_scale,
            layers,
            output_norm: vec_of(&m.output_norm)?,
            head,
            ropes,
            team: team::Team::new(rayon::current_num_threads()),
            state: Shared(UnsafeCell::new(state)),
            pos: 0,
            capacity,
            hp,
        }))
    }

    /// The kernels' level.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Position of the next token.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Forgets the context (buffers are kept).
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Runs `token` at the next position and returns its logits (`vocab` values).
    pub fn step(&mut self, token: u32) -> Result<&[f32]> {
        if token as usize >= self.hp.vocab_size {
            return Err(ModelError::Config(format!(
                "token {token} outside the vocabulary of {}",
                self.hp.vocab_size
            )));
        }
        if self.pos >= self.capacity {
            return Err(ModelError::Config(format!(
                "the decoder holds {} positions and all are used",
                self.capacity
            )));
        }
        // The team is the pool's size; a caller may step from another pool than the one the
        // decoder was made in.
        if self.team.threads() != rayon::current_num_threads() {
            self.team = team::Team::new(rayon::current_num_threads());
        }
        let st = self.state.0.get_mut();
        let outs = Outs {
            q: st.q.as_mut_ptr(),
            k: st.k.as_mut_ptr(),
            v: st.v.as_mut_ptr(),
            o: st.o.as_mut_ptr(),
            gate: st.gate.as_mut_ptr(),
            up: st.up.as_mut_ptr(),
            down: st.down.as_mut_ptr(),
            logits: st.logits.as_mut_ptr(),
            att: st.att.as_mut_ptr(),
            keys: st.scores.len() / self.hp.n_head,
            scores: st.scores.as_mut_ptr(),
        };
        let this = &*self;
        this.team.run(|t| this.program(t, token, outs));
        self.pos += 1;
        Ok(&self.state.0.get_mut().logits)
    }

    /// `f` with the state on thread 0 alone, then a barrier for the whole team.
    fn serial(&self, t: usize, f: impl FnOnce(&mut State)) {
        let st = self.state.0.get();
        self.team.serial(t, || {
            // SAFETY: `Team::serial` runs this closure on thread 0 only, after a barrier that
            // every thread's earlier accesses to `State` precede, and the barrier after it
            // orders it before any later one: this is the only reference to `State` meanwhile.
            f(unsafe { &mut *st })
        });
    }

    /// One token on thread `t` of the team. Between two barriers either thread 0 alone touches
    /// `State`, or every thread reads one of its `Input`s and writes disjoint rows through
    /// `outs`.
    fn program(&self, t: usize, token: u32, outs: Outs) {
        let st = self.state.0.get();
        let team = &self.team;
        let hp = &self.hp;
        let eps = hp.rms_eps as f32;
        let pos = self.pos;
        self.serial(t, |s| {
            self.embed.row(token as usize, &mut s.x);
            if let Some(m) = self.embed_scale {
                ops::scale(&mut s.x, m);
            }
            for (r, (c, sn)) in self.ropes.iter().zip(s.cos.iter_mut().zip(&mut s.sin)) {
                r.spec.angles(&r.inv, pos, c, sn);
            }
        });
        let share = |jobs: &[Job]| {
            let split = Split::new(jobs, team.threads());
            // SAFETY: `outs` point to buffers of each product's rows, inputs were quantized in
            // the serial step before, and `share` hands each chunk to one thread.
            team.share(split.chunks, |c| unsafe { split.run(self.isa, c) });
        };
        for (il, l) in self.layers.iter().enumerate() {
            self.serial(t, |s| {
                ops::rms_norm(&s.x, &l.attn_norm, eps, &mut s.h);
                s.in_attn.quantize(self.isa, &s.h, &[l.q, l.k, l.v]);
            });
            // SAFETY: the serial step above wrote the input and ended at a barrier; no thread
            // writes it until the next serial step, so shared reads are sound.
            let input = unsafe { &(*st).in_attn };
            share(&[
                Job::new(l.q, input, outs.q),
                Job::new(l.k, input, outs.k),
                Job::new(l.v, input, outs.v),
            ]);
            self.serial(t, |s| {
                self.attention_inputs(s, il, l, pos);
            });
            // The query heads shared out: each reads Q and the cache, which no thread writes
            // until the next serial step, and writes its own scores row and output columns.
            // SAFETY: the serial step above ended at a barrier and no thread writes `State`
            // itself until the next one; the heads write only through `outs` below.
            let s = unsafe { &*st };
            let vd = hp.value_dim;
            team.share(hp.n_head, |h| {
                // SAFETY: head `h < n_head` owns scores row `h` (`keys` floats of
                // `n_head·keys`) and output columns `h·vd .. (h+1)·vd` of `att`; `share` runs
                // each head on one thread, and nothing reads these rows until the barrier.
                let (scores, out) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(outs.scores.add(h * outs.keys), outs.keys),
                        std::slice::from_raw_parts_mut(outs.att.add(h * vd), vd),
                    )
                };
                s.kv[il].attend_head(h, &s.q, pos, self.ggml, scores, out);
            });
            self.serial(t, |s| {
                s.in_o.quantize(self.isa, &s.att, &[l.o]);
            });
            // SAFETY: as for `in_attn`: written by the serial step before, read-only until the
            // next.
            let input = unsafe { &(*st).in_o };
            share(&[Job::new(l.o, input, outs.o)]);
            self.serial(t, |s| {
                add_bias(&mut s.o, &l.bo);
                if let Some(w) = &l.post_attn_norm {
                    ops::rms_norm_rows(&mut s.o, w, eps, &mut s.tmp);
                }
                for (x, o) in s.x.iter_mut().zip(&s.o) {
                    *x += o;
                }
                ops::rms_norm(&s.x, &l.ffn_norm, eps, &mut s.h);
                s.in_ffn.quantize(self.isa, &s.h, &[l.gate, l.up]);
            });
            // SAFETY: as for `in_attn`: written by the serial step before, read-only until the
            // next.
            let input = unsafe { &(*st).in_ffn };
            share(&[
                Job::new(l.gate, input, outs.gate),
                Job::new(l.up, input, outs.up),
            ]);
            self.serial(t, |s| {
                ops::gated(&mut s.gate, &s.up, self.act, self.ggml);
                s.in_down.quantize(self.isa, &s.gate, &[l.down]);
            });
            // SAFETY: as for `in_attn`: written by the serial step before, read-only until the
            // next.
            let input = unsafe { &(*st).in_down };
            share(&[Job::new(l.down, input, outs.down)]);
            self.serial(t, |s| {
                if let Some(w) = &l.post_ffn_norm {
                    ops::rms_norm_rows(&mut s.down, w, eps, &mut s.tmp);
                }
                for (x, m) in s.x.iter_mut().zip(&s.down) {
                    *x += m;
                }
            });
        }
        self.serial(t, |s| {
            ops::rms_norm(&s.x, &self.output_norm, eps, &mut s.h);
            s.in_attn.quantize(self.isa, &s.h, &[self.head]);
        });
        // SAFETY: as in the blocks: written by the serial step before, read-only until the run
        // ends.
        let input = unsafe { &(*st).in_attn };
        share(&[Job::new(self.head, input, outs.logits)]);
    }

    /// Biases, Q/K norms, RoPE and the f16 roundings of `s.q/k/v`, and K/V into the cache.
    fn attention_inputs(&self, s: &mut State, il: usize, l: &Layer, pos: usize) {
        let hp = &self.hp;
        let eps = hp.rms_eps as f32;
        add_bias(&mut s.q, &l.bq);
        add_bias(&mut s.k, &l.bk);
        add_bias(&mut s.v, &l.bv);
        if let Some(w) = &l.q_norm {
            ops::rms_norm_rows(&mut s.q, w, eps, &mut s.tmp);
        }
        if let Some(w) = &l.k_norm {
            ops::rms_norm_rows(&mut s.k, w, eps, &mut s.tmp);
        }
        let style: RopeStyle = self.ropes[l.rope].spec.style;
        let (cos, sin) = (&s.cos[l.rope], &s.sin[l.rope]);
        ops::rope(&mut s.q, hp.head_dim, style, cos, sin);
        ops::rope(&mut s.k, hp.head_dim, style, cos, sin);
        if self.ggml {
            ops::round_f16(&mut s.k);
            ops::round_f16(&mut s.v);
        }
        s.kv[il].store(pos, &s.k, &s.v);
        ops::scale(&mut s.q, hp.attn_scale as f32);
        if self.ggml {
            ops::round_f16(&mut s.q);
        }
    }
}

fn add_bias(x: &mut [f32], b: &Option<Vec<f32>>) {
    if let Some(b) = b {
        for (v, b) in x.iter_mut().zip(b) {
            *v += b;
        }
    }
}
