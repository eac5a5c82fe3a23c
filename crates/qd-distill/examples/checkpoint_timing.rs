//! How much the checkpoints' sha256 costs: writes a checkpoint of the main job's size (100.3 M
//! trained parameters: 401 MB of weights, 803 MB of AdamW moments) `REPS` times into `DIR`
//! (default runs/checkpoint-timing; a real disk, not tmpfs), alternating the way checkpoints
//! were written before checksums (candle's writer, synced) with `Checkpoint::save` (hashed as
//! written, synced, renamed into place), and prints both and the median difference.
//! `cargo run --release --example checkpoint_timing -p qd-distill [DIR] [REPS]`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use qd_distill::checkpoint::Checkpoint;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "runs/checkpoint-timing".into()),
    );
    let reps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let dev = Device::Cpu;
    // 100.3 M parameters in 18 blocks' worth of matrices (the sizes do not matter, the bytes do).
    let per = 100_300_000 / 72;
    let mut weights = BTreeMap::new();
    let mut optimizer = BTreeMap::new();
    for i in 0..72 {
        let t = Tensor::randn(0f32, 0.02, per, &dev)?;
        optimizer.insert(format!("m.w{i}"), (&t * 0.1)?);
        optimizer.insert(format!("v.w{i}"), t.sqr()?);
        weights.insert(format!("w{i}"), t);
    }
    let ck = Checkpoint {
        weights,
        optimizer,
        state: serde_json::json!({ "step": 1 }),
    };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        // Each into a new directory (as training does), removed outside the timing.
        let plain = dir.join(format!("plain-{rep}"));
        let target = dir.join(format!("step-{rep:08}"));
        std::fs::create_dir_all(&plain)?;
        // Without checksums, as checkpoints were written before them: candle's writer for
        // both tensor files, the state, each synced.
        let t = Instant::now();
        let to_hash = |m: &BTreeMap<String, Tensor>| -> std::collections::HashMap<String, Tensor> {
            m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        candle_core::safetensors::save(&to_hash(&ck.weights), plain.join("model.safetensors"))?;
        candle_core::safetensors::save(
            &to_hash(&ck.optimizer),
            plain.join("optimizer.safetensors"),
        )?;
        std::fs::write(
            plain.join("state.json"),
            serde_json::to_vec_pretty(&ck.state)?,
        )?;
        for f in ["model.safetensors", "optimizer.safetensors", "state.json"] {
            std::fs::File::open(plain.join(f))?.sync_all()?;
        }
        let a = t.elapsed().as_secs_f64();
        // With them: `Checkpoint::save`, which hashes as it writes.
        let t = Instant::now();
        ck.save(&target)?;
        let b = t.elapsed().as_secs_f64();
        std::fs::remove_dir_all(&plain)?;
        std::fs::remove_dir_all(&target)?;
        println!(
            "rep {rep}: without checksums {a:.3} s, with (Checkpoint::save) {b:.3} s: {:+.1} %",
            100.0 * (b / a - 1.0)
        );
        without.push(a);
        with.push(b);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, b) = (med(&mut without), med(&mut with));
    println!(
        "median of {reps}: without {a:.3} s, with {b:.3} s: {:+.1} %",
        100.0 * (b / a - 1.0)
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
