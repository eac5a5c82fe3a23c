//! Quantization recipes: the GGUF block type of every tensor, chosen as `llama-quantize` chooses
//! it, so a recipe's name means the same file layout here and in llama.cpp.

use qd_quant::QuantType;

use crate::error::{ExportError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipe {
    /// No quantization: every tensor stays f32 (the reference an f32 student is measured as).
    F32,
    /// One type for every block weight; the tied embedding / LM head follows llama.cpp's output
    /// rule (Q6_K, or Q8_0 when its rows are not multiples of 256 or the type is Q8_0).
    Uniform(QuantType),
    /// llama.cpp's Q4_K_M: Q4_K, with Q6_K for `attn_v` and `ffn_down` in the layers
    /// `use_more_bits` picks.
    Q4KM,
    /// Google's QAT layout: block weights Q4_0, `token_embd`/`output` Q8_0.
    QatQ4,
    /// One type for every 2-D tensor, the embedding and LM head included, as `llama-quantize
    /// --pure` writes (named `<type>-pure`, e.g. `q4_0-pure`: the smallest Q4_0 file). Rows a
    /// K-quant cannot tile take llama.cpp's fallback, as everywhere.
    Pure(QuantType),
}

/// What a tensor is, for the rules that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    /// 1-D (norms, biases): never quantized.
    Vector,
    /// `output.weight`, or `token_embd.weight` when the LM head is tied to it.
    Output,
    /// `token_embd.weight` with a separate LM head.
    Embedding,
    AttnV {
        layer: usize,
    },
    FfnDown {
        layer: usize,
    },
    /// Any other 2-D block weight.
    Block,
}

impl TensorKind {
    pub fn of(name: &str, dims: &[usize], has_output: bool) -> Self {
        if dims.len() < 2 {
            return Self::Vector;
        }
        if name == "output.weight" || (name == "token_embd.weight" && !has_output) {
            return Self::Output;
        }
        if name == "token_embd.weight" {
            return Self::Embedding;
        }
        let layer = name
            .strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse().ok());
        match layer {
            Some(layer) if name.ends_with(".attn_v.weight") => Self::AttnV { layer },
            Some(layer) if name.ends_with(".ffn_down.weight") => Self::FfnDown { layer },
            _ => Self::Block,
        }
    }
}

/// The type a tensor is written as. `wanted` differs from `used` when the row length ruled the
/// wanted type out and llama.cpp's fallback was taken (`None` = f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub wanted: Option<QuantType>,
    pub used: Option<QuantType>,
}

impl Choice {
    pub fn fell_back(&self) -> bool {
        self.wanted != self.used
    }
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third one
/// between them get more bits.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i as isize - (n / 8) as isize) % 3 == 2
}

/// llama.cpp's replacement when a K-quant's 256-value super-block does not fit a row (its
/// older table, for the types we implement: IQ4_NL is not one of them, so Q2_K/Q3_K go to Q4_0).
fn fallback(ty: QuantType) -> QuantType {
    match ty {
        QuantType::Q2K | QuantType::Q3K => QuantType::Q4_0,
        QuantType::Q4K => QuantType::Q5_0,
        QuantType::Q5K => QuantType::Q5_1,
        QuantType::Q6K => QuantType::Q8_0,
        other => other,
    }
}

impl Recipe {
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "q4_k_m" => Ok(Self::Q4KM),
            "qat-q4" | "qat_q4" => Ok(Self::QatQ4),
            other if other.ends_with("-pure") => QuantType::parse(&other[..other.len() - 5])
                .map(Self::Pure)
                .ok_or_else(|| ExportError::UnknownRecipe(s.to_string())),
            other => QuantType::parse(other)
                .map(Self::Uniform)
                .ok_or_else(|| ExportError::UnknownRecipe(s.to_string())),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Self::F32 => "f32".into(),
            Self::Uniform(t) => t.name().to_ascii_lowercase(),
            Self::Q4KM => "q4_k_m".into(),
            Self::QatQ4 => "qat-q4".into(),
            Self::Pure(t) => format!("{}-pure", t.name().to_ascii_lowercase()),
        }
    }

    /// llama.cpp's `general.file_type` (`llama_ftype`) for the recipe.
    pub fn file_type(&self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::Q4KM => 15,
            Self::QatQ4 => 2,
            Self::Uniform(t) | Self::Pure(t) => match t {
                QuantType::Q4_0 => 2,
                QuantType::Q4_1 => 3,
                QuantType::Q8_0 => 7,
                QuantType::Q5_0 => 8,
                QuantType::Q5_1 => 9,
                QuantType::Q2K => 10,
                QuantType::Q3K => 11,
                QuantType::Q4K => 14,
                QuantType::Q5K => 16,
                QuantType::Q6K => 18,
            },
        }
    }

    /// The type of a tensor of kind `kind` whose rows hold `row_len` values, in a model of
    /// `n_layer` blocks.
    pub fn choose(&self, kind: TensorKind, row_len: usize, n_layer: usize) -> Choice {
        let wanted = match (self, kind) {
            (Self::F32, _) | (_, TensorKind::Vector) => None,
            (Self::QatQ4, TensorKind::Output | TensorKind::Embedding) => Some(QuantType::Q8_0),
            (Self::QatQ4, _) => Some(QuantType::Q4_0),
            (Self::Pure(t), _) => Some(*t),
            // Not a fallback: llama.cpp picks Q8_0 outright for such rows.
            (_, TensorKind::Output) => Some(
                if self.base() == QuantType::Q8_0 || !row_len.is_multiple_of(256) {
                    QuantType::Q8_0
                } else {
                    QuantType::Q6K
                },
            ),
            (Self::Q4KM, TensorKind::AttnV { layer } | TensorKind::FfnDown { layer })
                if use_more_bits(layer, n_layer) =>
            {
                Some(QuantType::Q6K)
            }
            _ => Some(self.base()),
        };
        let used = wanted.and_then(|t| fits(t, row_len));
        Choice { wanted, used }
    }

    fn base(&self) -> QuantType {
        match self {
            Self::Uniform(t) | Self::Pure(t) => *t,
            Self::Q4KM => QuantType::Q4K,
            Self::QatQ4 => QuantType::Q4_0,
            Self::F32 => QuantType::Q8_0,
        }
    }
}

/// `ty` if its blocks tile a row, else llama.cpp's fallback, else f32 when not even 32-value
/// blocks fit.
fn fits(ty: QuantType, row_len: usize) -> Option<QuantType> {
    let ok = |t: QuantType| row_len.is_multiple_of(t.block_size());
    if ok(ty) {
        return Some(ty);
    }
    let alt = fallback(ty);
    ok(alt).then_some(alt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_more_bits_matches_the_teachers_q6_k_layers() {
        let picked: Vec<usize> = (0..18).filter(|&i| use_more_bits(i, 18)).collect();
        assert_eq!(picked, vec![0, 1, 4, 7, 10, 13, 15, 16, 17]);
    }

    #[test]
    fn names_round_trip_and_unknown_is_an_error() {
        for s in [
            "f32",
            "q4_0",
            "q4_k",
            "q5_0",
            "q8_0",
            "q4_k_m",
            "qat-q4",
            "q6_k",
            "q4_0-pure",
            "q2_k-pure",
        ] {
            assert_eq!(Recipe::parse(s).unwrap().name(), s);
        }
        assert!(matches!(
            Recipe::parse("q4_k_xl"),
            Err(ExportError::UnknownRecipe(_))
        ));
    }

    #[test]
    fn fallbacks_follow_llama_cpp() {
        let r = Recipe::Q4KM;
        let c = r.choose(TensorKind::Block, 640, 18);
        assert_eq!(
            (c.wanted, c.used),
            (Some(QuantType::Q4K), Some(QuantType::Q5_0))
        );
        let c = r.choose(TensorKind::AttnV { layer: 0 }, 640, 18);
        assert_eq!(c.used, Some(QuantType::Q8_0));
        let c = r.choose(TensorKind::Output, 640, 18);
        assert_eq!(c.used, Some(QuantType::Q8_0));
        let c = r.choose(TensorKind::Output, 2048, 18);
        assert_eq!(c.used, Some(QuantType::Q6K));
        let pure = Recipe::parse("q4_0-pure").unwrap();
        assert_eq!(
            pure.choose(TensorKind::Output, 640, 18).used,
            Some(QuantType::Q4_0)
        );
        let c = Recipe::Uniform(QuantType::Q2K).choose(TensorKind::Block, 640, 18);
        assert_eq!(
            (c.wanted, c.used),
            (Some(QuantType::Q2K), Some(QuantType::Q4_0))
        );
        assert!(matches!(
            Recipe::parse("q9_9-pure"),
            Err(ExportError::UnknownRecipe(_))
        ));
        let c = Recipe::Uniform(QuantType::Q4_0).choose(TensorKind::Block, 40, 2);
        assert_eq!(c.used, None);
        assert!(c.fell_back());
    }
}
