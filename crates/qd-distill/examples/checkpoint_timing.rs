//! How much the checkpoints' sha256 costs: writes a checkpoint of the main job's size (100.3 M
//! trained parameters: 401 MB of weights, 803 MB of AdamW moments) `REPS` times into `DIR`
//! (default runs/checkpoint-timing; a real disk, not tmpfs), and hashes its files the way
//! `Checkpoint::save` does (the two big files on two threads, the state after). Prints the save
//! time (hashing included) and the hashing alone, so "writing without hashing" is the
//! difference. `cargo run --release --example checkpoint_timing -p qd-distill [DIR] [REPS]`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use qd_distill::train::checkpoint::Checkpoint;

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
    let target = dir.join("step-00000001");
    for rep in 0..reps {
        let t = Instant::now();
        ck.save(&target)?;
        let save = t.elapsed().as_secs_f64();
        let t = Instant::now();
        std::thread::scope(|s| {
            let a = s.spawn(|| qd_export::file_sha256(&target.join("model.safetensors")));
            let b = s.spawn(|| qd_export::file_sha256(&target.join("optimizer.safetensors")));
            let (a, b) = (a.join(), b.join());
            a.expect("thread").and(b.expect("thread"))
        })?;
        qd_export::file_sha256(&target.join("state.json"))?;
        let hash = t.elapsed().as_secs_f64();
        println!(
            "rep {rep}: save {save:.3} s (sha256 included), sha256 alone {hash:.3} s: {:.1} % of the save",
            100.0 * hash / save
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
