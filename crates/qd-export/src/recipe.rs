//! Quantization recipes: the GGUF block type of every tensor, chosen as `llama-quantize` chooses
//! it, so a recipe's name means the same file layout here and in llama.cpp.

use qd_gguf::GgmlType;

use crate::error::{ExportError, Result};

/// llama-quantize's file types (`llama_ftype`) that this crate writes: one default block type
/// and llama.cpp's per-tensor rules (`llama_tensor_get_type_impl`) around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ftype {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q2KS,
    Q3KS,
    Q3KM,
    Q3KL,
    Q4KS,
    Q4KM,
    Q5KS,
    Q5KM,
    Q6K,
}

impl Ftype {
    pub const ALL: [Ftype; 15] = [
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q8_0,
        Self::Q2K,
        Self::Q2KS,
        Self::Q3KS,
        Self::Q3KM,
        Self::Q3KL,
        Self::Q4KS,
        Self::Q4KM,
        Self::Q5KS,
        Self::Q5KM,
        Self::Q6K,
    ];

    /// llama-quantize's name, lower-cased (`q4_k_m`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Q4_0 => "q4_0",
            Self::Q4_1 => "q4_1",
            Self::Q5_0 => "q5_0",
            Self::Q5_1 => "q5_1",
            Self::Q8_0 => "q8_0",
            Self::Q2K => "q2_k",
            Self::Q2KS => "q2_k_s",
            Self::Q3KS => "q3_k_s",
            Self::Q3KM => "q3_k_m",
            Self::Q3KL => "q3_k_l",
            Self::Q4KS => "q4_k_s",
            Self::Q4KM => "q4_k_m",
            Self::Q5KS => "q5_k_s",
            Self::Q5KM => "q5_k_m",
            Self::Q6K => "q6_k",
        }
    }

    /// `general.file_type` (`llama_ftype`).
    pub fn id(self) -> u32 {
        match self {
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q8_0 => 7,
            Self::Q5_0 => 8,
            Self::Q5_1 => 9,
            Self::Q2K => 10,
            Self::Q3KS => 11,
            Self::Q3KM => 12,
            Self::Q3KL => 13,
            Self::Q4KS => 14,
            Self::Q4KM => 15,
            Self::Q5KS => 16,
            Self::Q5KM => 17,
            Self::Q6K => 18,
            Self::Q2KS => 21,
        }
    }

    /// `llama_ftype_get_default_type`.
    pub fn base(self) -> GgmlType {
        match self {
            Self::Q4_0 => GgmlType::Q4_0,
            Self::Q4_1 => GgmlType::Q4_1,
            Self::Q5_0 => GgmlType::Q5_0,
            Self::Q5_1 => GgmlType::Q5_1,
            Self::Q8_0 => GgmlType::Q8_0,
            Self::Q2K | Self::Q2KS => GgmlType::Q2K,
            Self::Q3KS | Self::Q3KM | Self::Q3KL => GgmlType::Q3K,
            Self::Q4KS | Self::Q4KM => GgmlType::Q4K,
            Self::Q5KS | Self::Q5KM => GgmlType::Q5K,
            Self::Q6K => GgmlType::Q6K,
        }
    }

    /// The file type's rule for one block weight, before the row-length fallback: llama.cpp's
    /// `llama_tensor_get_type_impl` for dense (non-MoE, non-Falcon) models, which are all the
    /// families this toolkit loads.
    fn block_type(self, kind: TensorKind, m: &ModelInfo) -> GgmlType {
        use GgmlType as Q;
        let n = m.n_layer;
        match (self, kind) {
            (Self::Q2K, TensorKind::AttnV { .. }) => {
                if m.n_gqa >= 4 {
                    Q::Q4K
                } else {
                    Q::Q3K
                }
            }
            (Self::Q2KS, TensorKind::AttnV { .. }) if m.n_gqa >= 4 => Q::Q4K,
            (Self::Q3KM, TensorKind::AttnV { layer }) => {
                if layer < 2 {
                    Q::Q5K
                } else {
                    Q::Q4K
                }
            }
            (Self::Q3KL, TensorKind::AttnV { .. }) => Q::Q5K,
            (Self::Q4KM | Self::Q5KM, TensorKind::AttnV { layer }) if use_more_bits(layer, n) => {
                Q::Q6K
            }
            (Self::Q4KS, TensorKind::AttnV { layer }) if layer < 4 => Q::Q5K,
            (Self::Q2K, TensorKind::FfnDown { .. }) => Q::Q3K,
            (Self::Q2KS, TensorKind::FfnDown { layer }) if layer < n / 8 => Q::Q4K,
            (Self::Q3KM, TensorKind::FfnDown { layer }) => {
                if layer < n / 16 {
                    Q::Q5K
                } else {
                    Q::Q4K
                }
            }
            (Self::Q3KL, TensorKind::FfnDown { .. }) => Q::Q5K,
            (Self::Q4KM | Self::Q5KM, TensorKind::FfnDown { layer }) if use_more_bits(layer, n) => {
                Q::Q6K
            }
            (Self::Q4KS, TensorKind::FfnDown { layer }) if layer < n / 8 => Q::Q5K,
            // "Guard against craziness in the first few ffn_down layers" — only with an imatrix,
            // so that a plain Q4_0 stays what it always was.
            (Self::Q4_0, TensorKind::FfnDown { layer }) if m.imatrix && layer < n / 8 => Q::Q4_1,
            (Self::Q5_0, TensorKind::FfnDown { layer }) if m.imatrix && layer < n / 8 => Q::Q5_1,
            (Self::Q2K, TensorKind::AttnOutput) => Q::Q3K,
            (Self::Q3KM, TensorKind::AttnOutput) => Q::Q4K,
            (Self::Q3KL, TensorKind::AttnOutput) => Q::Q5K,
            (Self::Q3KM | Self::Q3KL, TensorKind::AttnQkv) => Q::Q4K,
            (Self::Q4KM, TensorKind::AttnQkv) => Q::Q5K,
            (Self::Q5KM, TensorKind::AttnQkv) => Q::Q6K,
            _ => self.base(),
        }
    }

    /// llama.cpp refuses Q2_K_S without an importance matrix (its Q2_K tensors "will be
    /// garbage" without one).
    pub fn requires_imatrix(self) -> bool {
        self == Self::Q2KS
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipe {
    /// No quantization: every tensor stays f32 (the reference an f32 student is measured as).
    F32,
    /// A llama-quantize file type, tensor for tensor as llama-quantize writes it.
    Llama(Ftype),
    /// Google's QAT layout: block weights Q4_0, `token_embd`/`output` Q8_0.
    QatQ4,
    /// One type for every 2-D tensor, the embedding and LM head included, as `llama-quantize
    /// --pure` writes (named `<type>-pure`, e.g. `q4_0-pure`: the smallest Q4_0 file). Rows a
    /// K-quant cannot tile take llama.cpp's fallback, as everywhere.
    Pure(GgmlType),
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
    AttnOutput,
    /// A fused Q/K/V projection (`attn_qkv`).
    AttnQkv,
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
            Some(_) if name.ends_with(".attn_output.weight") => Self::AttnOutput,
            Some(_) if name.ends_with(".attn_qkv.weight") => Self::AttnQkv,
            _ => Self::Block,
        }
    }
}

/// What of the model the rules look at: its depth, how many query heads share a KV head, and
/// whether an importance matrix is given (Q4_0/Q5_0 change with one, as in llama.cpp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelInfo {
    pub n_layer: usize,
    pub n_gqa: usize,
    pub imatrix: bool,
}

impl ModelInfo {
    /// From a GGUF's hyper-parameters (`head_count / head_count_kv` of the first layer, as
    /// llama.cpp's `n_gqa()`).
    pub fn of(file: &qd_gguf::GgufFile, n_layer: usize, imatrix: bool) -> Self {
        let arch = file.architecture().unwrap_or_default().to_string();
        let first = |k: &str| {
            file.get(&format!("{arch}.{k}")).and_then(|v| match v {
                qd_gguf::Value::Array(_, items) => items.first().and_then(|v| v.as_u64()),
                other => other.as_u64(),
            })
        };
        let heads = first("attention.head_count").unwrap_or(1).max(1);
        let kv = first("attention.head_count_kv").unwrap_or(heads).max(1);
        Self {
            n_layer,
            n_gqa: (heads / kv) as usize,
            imatrix,
        }
    }
}

/// The type a tensor is written as. `wanted` differs from `used` when the row length ruled the
/// wanted type out and llama.cpp's fallback was taken (`None` = f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub wanted: Option<GgmlType>,
    pub used: Option<GgmlType>,
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
fn fallback(ty: GgmlType) -> GgmlType {
    match ty {
        GgmlType::Q2K | GgmlType::Q3K => GgmlType::Q4_0,
        GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        GgmlType::Q6K => GgmlType::Q8_0,
        other => other,
    }
}

impl Recipe {
    /// Every name `parse` takes, for help and errors.
    pub const NAMES: &'static str = "f32, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q2_k_s, q3_k_s, \
        q3_k_m, q3_k_l, q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k, qat-q4, <type>-pure \
        (q3_k = q3_k_s, q5_k = q5_k_s)";

    pub fn parse(s: &str) -> Result<Self> {
        let lower = s.to_ascii_lowercase();
        let unknown = || ExportError::UnknownRecipe {
            name: s.to_string(),
            known: Self::NAMES,
        };
        match lower.as_str() {
            "f32" => Ok(Self::F32),
            "qat-q4" | "qat_q4" => Ok(Self::QatQ4),
            // Today's names, kept where they are exactly a llama-quantize type.
            "q3_k" => Ok(Self::Llama(Ftype::Q3KS)),
            "q5_k" => Ok(Self::Llama(Ftype::Q5KS)),
            other if other.ends_with("-pure") => qd_quant::parse_type(&other[..other.len() - 5])
                .map(Self::Pure)
                .ok_or_else(unknown),
            other => Ftype::ALL
                .into_iter()
                .find(|f| f.name() == other)
                .map(Self::Llama)
                .ok_or_else(unknown),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Self::F32 => "f32".into(),
            Self::Llama(f) => f.name().into(),
            Self::QatQ4 => "qat-q4".into(),
            Self::Pure(t) => format!("{}-pure", t.name().to_ascii_lowercase()),
        }
    }

    /// llama.cpp's `general.file_type` (`llama_ftype`) for the recipe.
    pub fn file_type(&self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::QatQ4 => 2,
            Self::Llama(f) => f.id(),
            Self::Pure(t) => match t {
                GgmlType::Q4_0 => 2,
                GgmlType::Q4_1 => 3,
                GgmlType::Q8_0 => 7,
                GgmlType::Q5_0 => 8,
                GgmlType::Q5_1 => 9,
                GgmlType::Q2K => 10,
                GgmlType::Q3K => 11,
                GgmlType::Q4K => 14,
                GgmlType::Q5K => 16,
                GgmlType::Q6K => 18,
                // Not made by `parse` (quantizable types only), named as llama.cpp would.
                GgmlType::F32 => 0,
                GgmlType::F16 => 1,
                GgmlType::BF16 => 32,
                GgmlType::Q8_1 | GgmlType::Q8K => 1024, // LLAMA_FTYPE_GUESSED
            },
        }
    }

    /// Whether an importance matrix changes anything: not for f32 or Q8_0 (llama-quantize says
    /// so and quantizes Q8_0 unweighted).
    pub fn uses_imatrix(&self) -> bool {
        !matches!(
            self,
            Self::F32 | Self::Llama(Ftype::Q8_0) | Self::Pure(GgmlType::Q8_0)
        )
    }

    /// The type of a tensor of kind `kind` whose rows hold `row_len` values.
    pub fn choose(&self, kind: TensorKind, row_len: usize, model: &ModelInfo) -> Choice {
        let wanted = match (self, kind) {
            (Self::F32, _) | (_, TensorKind::Vector) => None,
            (Self::QatQ4, TensorKind::Output | TensorKind::Embedding) => Some(GgmlType::Q8_0),
            (Self::QatQ4, _) => Some(GgmlType::Q4_0),
            (Self::Pure(t), _) => Some(*t),
            // Not a fallback: llama.cpp picks Q8_0 outright for such rows.
            (Self::Llama(f), TensorKind::Output) => Some(
                if f.base() == GgmlType::Q8_0 || !row_len.is_multiple_of(256) {
                    GgmlType::Q8_0
                } else {
                    GgmlType::Q6K
                },
            ),
            (Self::Llama(f), TensorKind::Embedding) => Some(f.base()),
            (Self::Llama(f), kind) => Some(f.block_type(kind, model)),
        };
        let used = wanted.and_then(|t| fits(t, row_len));
        Choice { wanted, used }
    }
}

/// `ty` if its blocks tile a row, else llama.cpp's fallback, else f32 when not even 32-value
/// blocks fit.
fn fits(ty: GgmlType, row_len: usize) -> Option<GgmlType> {
    let ok = |t: GgmlType| row_len.is_multiple_of(t.block_size());
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
            "q4_k_s",
            "q2_k_s",
            "q3_k_l",
            "q5_k_m",
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
            Recipe::parse("q4_k"),
            Err(ExportError::UnknownRecipe { .. })
        ));
    }

    #[test]
    fn fallbacks_follow_llama_cpp() {
        let r = Recipe::Llama(Ftype::Q4KM);
        let m = ModelInfo {
            n_layer: 18,
            n_gqa: 4,
            imatrix: false,
        };
        let c = r.choose(TensorKind::Block, 640, &m);
        assert_eq!(
            (c.wanted, c.used),
            (Some(GgmlType::Q4K), Some(GgmlType::Q5_0))
        );
        let c = r.choose(TensorKind::AttnV { layer: 0 }, 640, &m);
        assert_eq!(c.used, Some(GgmlType::Q8_0));
        let c = r.choose(TensorKind::Output, 640, &m);
        assert_eq!(c.used, Some(GgmlType::Q8_0));
        let c = r.choose(TensorKind::Output, 2048, &m);
        assert_eq!(c.used, Some(GgmlType::Q6K));
        let pure = Recipe::parse("q4_0-pure").unwrap();
        assert_eq!(
            pure.choose(TensorKind::Output, 640, &m).used,
            Some(GgmlType::Q4_0)
        );
        let c = Recipe::Llama(Ftype::Q2K).choose(TensorKind::Block, 640, &m);
        assert_eq!(
            (c.wanted, c.used),
            (Some(GgmlType::Q2K), Some(GgmlType::Q4_0))
        );
        assert!(matches!(
            Recipe::parse("q9_9-pure"),
            Err(ExportError::UnknownRecipe { .. })
        ));
        let two = ModelInfo { n_layer: 2, ..m };
        let c = Recipe::Llama(Ftype::Q4_0).choose(TensorKind::Block, 40, &two);
        assert_eq!(c.used, None);
        assert!(c.fell_back());
    }
}

#[cfg(test)]
mod ftype_tests {
    use super::*;

    /// The gemma3-270M teacher's shape (18 layers, 4 query heads on 1 KV head): each file
    /// type's per-tensor rules as llama.cpp's `llama_tensor_get_type_impl` reads.
    #[test]
    fn file_type_rules_follow_llama_cpp() {
        let m = ModelInfo {
            n_layer: 18,
            n_gqa: 4,
            imatrix: false,
        };
        let ty =
            |f: Ftype, k: TensorKind, m: &ModelInfo| Recipe::Llama(f).choose(k, 2048, m).wanted;
        use GgmlType as Q;
        use TensorKind as K;
        assert_eq!(ty(Ftype::Q2K, K::AttnV { layer: 5 }, &m), Some(Q::Q4K));
        let mha = ModelInfo { n_gqa: 1, ..m };
        assert_eq!(ty(Ftype::Q2K, K::AttnV { layer: 5 }, &mha), Some(Q::Q3K));
        assert_eq!(ty(Ftype::Q2K, K::FfnDown { layer: 9 }, &m), Some(Q::Q3K));
        assert_eq!(ty(Ftype::Q2K, K::AttnOutput, &m), Some(Q::Q3K));
        assert_eq!(ty(Ftype::Q2K, K::Block, &m), Some(Q::Q2K));
        assert_eq!(ty(Ftype::Q2KS, K::FfnDown { layer: 1 }, &m), Some(Q::Q4K));
        assert_eq!(ty(Ftype::Q2KS, K::FfnDown { layer: 2 }, &m), Some(Q::Q2K));
        assert_eq!(ty(Ftype::Q3KM, K::AttnV { layer: 1 }, &m), Some(Q::Q5K));
        assert_eq!(ty(Ftype::Q3KM, K::AttnV { layer: 2 }, &m), Some(Q::Q4K));
        assert_eq!(ty(Ftype::Q3KM, K::FfnDown { layer: 0 }, &m), Some(Q::Q5K));
        assert_eq!(ty(Ftype::Q3KM, K::FfnDown { layer: 1 }, &m), Some(Q::Q4K));
        assert_eq!(ty(Ftype::Q3KL, K::AttnOutput, &m), Some(Q::Q5K));
        assert_eq!(ty(Ftype::Q4KS, K::AttnV { layer: 3 }, &m), Some(Q::Q5K));
        assert_eq!(ty(Ftype::Q4KS, K::AttnV { layer: 4 }, &m), Some(Q::Q4K));
        assert_eq!(ty(Ftype::Q4KS, K::FfnDown { layer: 1 }, &m), Some(Q::Q5K));
        assert_eq!(ty(Ftype::Q5KM, K::FfnDown { layer: 4 }, &m), Some(Q::Q6K));
        assert_eq!(ty(Ftype::Q5KM, K::FfnDown { layer: 5 }, &m), Some(Q::Q5K));
        // Q4_0/Q5_0 change only with an imatrix.
        assert_eq!(ty(Ftype::Q4_0, K::FfnDown { layer: 1 }, &m), Some(Q::Q4_0));
        let im = ModelInfo { imatrix: true, ..m };
        assert_eq!(ty(Ftype::Q4_0, K::FfnDown { layer: 1 }, &im), Some(Q::Q4_1));
        assert_eq!(ty(Ftype::Q4_0, K::FfnDown { layer: 2 }, &im), Some(Q::Q4_0));
        assert_eq!(ty(Ftype::Q5_0, K::FfnDown { layer: 0 }, &im), Some(Q::Q5_1));
        assert_eq!(ty(Ftype::Q4_1, K::FfnDown { layer: 0 }, &im), Some(Q::Q4_1));
        for f in Ftype::ALL {
            assert_eq!(Recipe::parse(f.name()).unwrap(), Recipe::Llama(f));
        }
        assert_eq!(Recipe::parse("q3_k").unwrap(), Recipe::Llama(Ftype::Q3KS));
        assert_eq!(Recipe::parse("Q5_K").unwrap(), Recipe::Llama(Ftype::Q5KS));
        assert!(Ftype::Q2KS.requires_imatrix() && !Ftype::Q2K.requires_imatrix());
        assert!(!Recipe::Llama(Ftype::Q8_0).uses_imatrix());
    }
}
