#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] qd_gguf::GgufError),
    #[error("unsupported tokenizer model {0:?} (supported: \"llama\" SentencePiece-BPE, \"gpt2\" byte-level BPE)")]
    UnsupportedModel(String),
    #[error("tokenizer metadata is inconsistent: {0}")]
    Inconsistent(String),
    #[error("tokenizer: {0}")]
    Tokenizers(String),
}

impl From<tokenizers::Error> for TokenizerError {
    fn from(e: tokenizers::Error) -> Self {
        TokenizerError::Tokenizers(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, TokenizerError>;
