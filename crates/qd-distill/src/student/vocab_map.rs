//! A trimmed student's token ids in its teacher's vocabulary. The student file's tokenizer is
//! a subset of the teacher's (`qat-distill student --trim-vocab`), so the table is read off the
//! two token lists: each student token is the teacher token with the same text. The teacher
//! then reads the student's tokenization of the text, and its distribution is restricted to the
//! kept ids (renormalised: a softmax over the kept logits).

use qd_gguf::GgufFile;
use qd_model::ModelError;
use qd_tokenizer::GgufVocab;

/// `kept[student id]` = the teacher id of the same token.
#[derive(Debug, Clone, PartialEq)]
pub struct VocabMap {
    pub kept: Vec<u32>,
}

impl VocabMap {
    /// Student ids → teacher ids (ids outside the student's vocabulary are refused earlier).
    pub fn to_teacher(&self, ids: &[u32]) -> Vec<u32> {
        ids.iter().map(|&i| self.kept[i as usize]).collect()
    }
}

fn vocab(f: &GgufFile) -> qd_model::Result<GgufVocab> {
    GgufVocab::from_gguf(f).map_err(|e| ModelError::Config(format!("{}: {e}", f.path().display())))
}

/// `None` when the student has the teacher's vocabulary; the table when it has a subset; an
/// error when its tokens are another tokenizer's.
pub fn vocab_map(teacher: &GgufFile, student: &GgufFile) -> qd_model::Result<Option<VocabMap>> {
    let (t, s) = (vocab(teacher)?, vocab(student)?);
    if t.tokens == s.tokens {
        return Ok(None);
    }
    let other = |why: String| {
        ModelError::Config(format!(
            "{} is not a trimmed vocabulary of the teacher {}: {why}",
            student.path().display(),
            teacher.path().display()
        ))
    };
    if t.model != s.model {
        return Err(other(format!(
            "tokenizer {:?}, the teacher's is {:?}",
            s.model, t.model
        )));
    }
    let index: std::collections::HashMap<&str, u32> = t
        .tokens
        .iter()
        .enumerate()
        .map(|(i, tok)| (tok.as_str(), i as u32))
        .collect();
    let kept = s
        .tokens
        .iter()
        .enumerate()
        .map(|(i, tok)| {
            index
                .get(tok.as_str())
                .copied()
                .ok_or_else(|| other(format!("its token {i} {tok:?} is not the teacher's")))
        })
        .collect::<qd_model::Result<Vec<u32>>>()?;
    Ok(Some(VocabMap { kept }))
}
