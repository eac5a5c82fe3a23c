//! Activation statistics of chosen linear layers, gathered while the teacher runs unchanged: a
//! [`WeightSource`] wrapper hands the model [`ProbeLinear`]s that record what enters them. The
//! input of `ffn_down` is the MLP's hidden activation (one column per channel) and the input of
//! `attn_output` the attention heads' outputs side by side, so these two probes see everything
//! width pruning ranks (Minitron's activation importance) without touching the model's code.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Result as CResult, Tensor};
use qd_model::{Linear, WeightSource};

/// `Σ_tokens ‖x_g‖₂` for each group `g` of `group` consecutive input columns (a channel when
/// `group` is 1, an attention head when it is the head's value width), and the token count.
#[derive(Debug, Clone)]
pub struct GroupNorms {
    pub group: usize,
    pub sums: Vec<f64>,
    pub tokens: usize,
}

impl GroupNorms {
    fn new(group: usize) -> Self {
        Self {
            group,
            sums: Vec::new(),
            tokens: 0,
        }
    }

    fn add(&mut self, x: &Tensor) -> CResult<()> {
        let cols = x.dim(candle_core::D::Minus1)?;
        if !cols.is_multiple_of(self.group) {
            candle_core::bail!("{cols} columns do not split into groups of {}", self.group);
        }
        let n = x.elem_count() / cols;
        let norms = x
            .to_dtype(DType::F32)?
            .reshape((n, cols / self.group, self.group))?
            .sqr()?
            .sum(2)?
            .sqrt()?
            .to_dtype(DType::F64)?
            .sum(0)?
            .to_vec1::<f64>()?;
        if self.sums.is_empty() {
            self.sums = vec![0.0; norms.len()];
        }
        for (s, v) in self.sums.iter_mut().zip(norms) {
            *s += v;
        }
        self.tokens += n;
        Ok(())
    }

    /// The mean norm per group over every token seen.
    pub fn means(&self) -> Vec<f64> {
        let n = self.tokens.max(1) as f64;
        self.sums.iter().map(|s| s / n).collect()
    }
}

type Shared = Arc<Mutex<GroupNorms>>;

/// Which weights are probed, and the group width of each (weight name → width).
type GroupOf = Box<dyn Fn(&str) -> Option<usize>>;

/// A linear layer that records its inputs' group norms (when it is probed) and then runs as is.
pub struct ProbeLinear<L> {
    inner: L,
    stats: Option<Shared>,
}

impl<L: Linear> Linear for ProbeLinear<L> {
    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        if let Some(s) = &self.stats {
            s.lock().expect("probe statistics poisoned").add(x)?;
        }
        self.inner.forward(x)
    }
}

/// Wraps a weight source so that the linears named by `group_of` (weight name → group width)
/// are probed.
pub struct ProbeWeights<W> {
    inner: W,
    group_of: GroupOf,
    stats: Mutex<BTreeMap<String, Shared>>,
}

impl<W: WeightSource> ProbeWeights<W> {
    pub fn new(inner: W, group_of: impl Fn(&str) -> Option<usize> + 'static) -> Self {
        Self {
            inner,
            group_of: Box::new(group_of),
            stats: Mutex::new(BTreeMap::new()),
        }
    }

    /// What every probed layer saw, by weight name.
    pub fn collect(&self) -> BTreeMap<String, GroupNorms> {
        self.stats
            .lock()
            .expect("probe statistics poisoned")
            .iter()
            .map(|(k, v)| (k.clone(), v.lock().expect("probe poisoned").clone()))
            .collect()
    }
}

impl<W: WeightSource> WeightSource for ProbeWeights<W> {
    type Linear = ProbeLinear<W::Linear>;
    type Embedding = W::Embedding;

    fn has(&self, name: &str) -> bool {
        self.inner.has(name)
    }

    fn shape(&self, name: &str) -> qd_model::Result<Vec<usize>> {
        self.inner.shape(name)
    }

    fn linear(&self, weight: &str, bias: Option<&str>) -> qd_model::Result<Self::Linear> {
        let stats = (self.group_of)(weight).map(|g| {
            let s = Arc::new(Mutex::new(GroupNorms::new(g)));
            self.stats
                .lock()
                .expect("probe statistics poisoned")
                .insert(weight.to_string(), s.clone());
            s
        });
        Ok(ProbeLinear {
            inner: self.inner.linear(weight, bias)?,
            stats,
        })
    }

    fn embedding(&self, name: &str) -> qd_model::Result<Self::Embedding> {
        self.inner.embedding(name)
    }

    fn vector(&self, name: &str) -> qd_model::Result<Tensor> {
        self.inner.vector(name)
    }
}
