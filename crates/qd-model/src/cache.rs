//! Key/value cache for incremental decoding.

use candle_core::{Result, Tensor};

#[derive(Default, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    pub fn new(n_layer: usize) -> Self {
        Self {
            layers: vec![None; n_layer],
            len: 0,
        }
    }

    /// Tokens already cached: the position of the next token.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions layer `il` holds (a sliding-window layer: at most window − 1).
    pub fn layer_len(&self, il: usize) -> usize {
        self.layers
            .get(il)
            .and_then(|l| l.as_ref())
            .map_or(0, |(k, _)| k.dims().get(2).copied().unwrap_or(0))
    }

    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.len = 0;
    }

    /// Appends `k, v [b, kv, s, d]` to layer `il` and returns the keys and values this call
    /// attends to. With `keep`, only the last `keep` positions are kept for later calls: a
    /// sliding-window layer's next query sees no older key, so its cache stops growing.
    pub(crate) fn append(
        &mut self,
        il: usize,
        k: Tensor,
        v: Tensor,
        keep: Option<usize>,
    ) -> Result<(Tensor, Tensor)> {
        let (k, v) = match self.layers[il].take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        let t = k.dim(2)?;
        self.layers[il] = Some(match keep {
            Some(n) if n < t => (
                k.narrow(2, t - n, n)?.contiguous()?,
                v.narrow(2, t - n, n)?.contiguous()?,
            ),
            _ => (k.clone(), v.clone()),
        });
        Ok((k, v))
    }

    /// Keys a sliding-window layer holds before a call at position `len`: the last `w − 1`.
    pub(crate) fn window_start(len: usize, window: usize) -> usize {
        len.saturating_sub(window.saturating_sub(1))
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
