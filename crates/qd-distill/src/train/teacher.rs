//! The run's teacher side: the quantized teacher (its LM head restricted for a trimmed student),
//! or a stored teacher (`teacher_cache`) checked against the run — and the source each step and
//! evaluation reads it through.

use candle_core::Device;
use qd_model::{QLinear, QModel};

use super::config::RunConfig;
use super::error::TrainError;
use super::step::TeacherSource;
use crate::student::VocabMap;
use crate::teacher_cache::{build, Identity, TeacherCache};

pub struct Teacher {
    /// The teacher itself, unless a cache stands in for it (then it is never loaded: its file
    /// gives the student's weights and the tokenizer only).
    pub model: Option<QModel>,
    pub cache: Option<TeacherCache>,
    /// A trimmed student's teacher has its LM head restricted to the kept ids (the
    /// renormalised distribution the student learns); the full head reports the mass left out.
    pub full_head: Option<QLinear>,
    pub vocab_size: usize,
}

impl Teacher {
    /// The teacher of `cfg` from its file `tf`, or its cache (refused with a trimmed student or
    /// a `kd_top_k` other than the cache's k).
    pub fn open(
        cfg: &RunConfig,
        tf: &qd_gguf::GgufFile,
        vmap: Option<&VocabMap>,
        dev: &Device,
    ) -> Result<Self, TrainError> {
        let cache = cfg
            .teacher_cache
            .as_deref()
            .map(TeacherCache::open)
            .transpose()?;
        if let (Some(c), Some(k)) = (&cache, cfg.kd_top_k) {
            if k != c.k() {
                return Err(TrainError::Config(format!(
                    "kd_top_k {k} but the teacher cache {} holds k = {}",
                    c.dir.display(),
                    c.k()
                )));
            }
        }
        if cache.is_some() && vmap.is_some() {
            return Err(TrainError::Config(
                "a trimmed student's vocabulary cannot read a teacher cache yet (its ids are the \
                 teacher's); train it online"
                    .into(),
            ));
        }
        let mut model = match &cache {
            Some(_) => None,
            None => Some(qd_model::load_quantized(tf, dev)?),
        };
        if let (Some(m), true) = (model.as_mut(), cfg.teacher_stored_blocks) {
            m.read_stored_blocks();
        }
        let full_head = match (vmap, model.as_mut()) {
            (Some(m), Some(teacher)) => {
                let restricted = teacher.lm_head.gather_rows(&m.kept)?;
                Some(std::mem::replace(&mut teacher.lm_head, restricted))
            }
            _ => None,
        };
        Ok(Self {
            model,
            cache,
            full_head,
            vocab_size: qd_model::HParams::from_gguf(tf)?.vocab_size,
        })
    }

    /// About what the teacher's first forward adds beside its stored blocks: one repacked copy
    /// of its quantized matrices (candle's tiles for K-quants, ours for Q8_0); 0 when it reads
    /// its stored blocks or a cache stands in for it.
    pub fn tile_bytes(&self, cfg: &RunConfig) -> u64 {
        let Some(m) = self.model.as_ref().filter(|_| !cfg.teacher_stored_blocks) else {
            return 0;
        };
        let bytes = |l: &QLinear| match &l.weight {
            candle_core::quantized::QMatMul::QTensor(w) => w.storage_size_in_bytes() as u64,
            _ => 0,
        };
        m.blocks
            .iter()
            .flat_map(qd_model::block::Block::linears)
            .map(bytes)
            .sum::<u64>()
            + bytes(&m.lm_head)
    }

    /// Refuses a cache built from other inputs than this run's (`data_hash`: its packed data).
    pub fn check_cache(
        &self,
        cfg: &RunConfig,
        tf: &qd_gguf::GgufFile,
        teacher_sha256: &str,
        data_hash: &str,
    ) -> Result<(), TrainError> {
        let Some(c) = &self.cache else {
            return Ok(());
        };
        c.check(&Identity {
            teacher_sha256: teacher_sha256.to_string(),
            tokenizer_sha256: build::tokenizer_sha256(tf),
            data_hash: data_hash.to_string(),
            seq_len: cfg.seq_len,
            seed: cfg.seed,
            val_fraction: cfg.val_fraction,
            k: c.k(),
            temperature: build::run_temperature(cfg).map_err(TrainError::Config)?,
            vocab_size: self.vocab_size,
            path: c.manifest.identity.path.clone(),
        })?;
        Ok(())
    }

    /// What steps and evaluations read: the model (full vocabulary or its top `top_k`) or the
    /// cache.
    pub fn source(&self, top_k: Option<usize>) -> TeacherSource<'_, QLinear, qd_model::QEmbedding> {
        match (&self.model, &self.cache) {
            (Some(model), _) => TeacherSource::Model { model, top_k },
            (None, Some(c)) => TeacherSource::Cache(c),
            (None, None) => unreachable!("a teacher is loaded whenever no cache is given"),
        }
    }
}
