//! The fault-injection suite: damaged inputs and interrupted writes, each run through the real
//! binary on a tiny generated teacher. For every case: the command exits non-zero with one
//! `error:` line (or, where the right answer is to carry on — a damaged token cache, an older
//! intact checkpoint — succeeds and says so), nothing panics or hangs, no partial or damaged
//! output appears under the output's name, and the good files beside it are untouched. Every
//! draw is seeded. `cargo test --release --test faults -- --nocapture` prints each case with its
//! outcome (docs/faults.md lists them).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::log_steps;
use qd_gguf::{GgmlType, GgufFile};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_qat-distill");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("QAT_DISTILL_CACHE", "/nonexistent-qat-distill-cache")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The case failed cleanly: non-zero, not a panic, one `error:` line and it is the last (the
/// lines before it are training's progress). Returns it.
fn refused(case: &str, o: &Output) -> String {
    let err = stderr(o);
    assert!(!o.status.success(), "{case}: exited 0\n{err}");
    assert_ne!(o.status.code(), Some(101), "{case}: panicked\n{err}");
    assert!(!err.contains("panicked"), "{case}: panicked\n{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{case}: not one error line\n{err}");
    let last = err.trim_end().lines().last().unwrap_or("");
    assert_eq!(
        last, errors[0],
        "{case}: the error is not the last line\n{err}"
    );
    assert!(last.starts_with("error: "), "{case}: {err}");
    println!("| {case} | refused: {last} |");
    last.to_string()
}

/// Either a success whose printed numbers are finite, or a clean refusal; never a panic.
fn finite_or_refused(case: &str, o: &Output) {
    if o.status.success() {
        let out = String::from_utf8_lossy(&o.stdout).to_lowercase();
        assert!(
            !out.contains("nan") && !out.contains("inf"),
            "{case}: a non-finite result with exit 0\n{out}"
        );
        println!("| {case} | ran: finite result (the damage is a valid file) |");
    } else {
        refused(case, o);
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    teacher: String,
    data: String,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let (teacher, data) = common::setup(&root);
        Self {
            _dir: dir,
            root,
            teacher,
            data,
        }
    }

    fn path(&self, p: &str) -> String {
        self.root.join(p).to_string_lossy().into_owned()
    }

    /// `train` of two blocks with QAT to Q4_0 into `out` (`steps`, a checkpoint every
    /// `every`), plus `extra` flags.
    fn train_args(&self, out: &str, steps: usize, every: usize, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = [
            "train",
            "--teacher",
            &self.teacher,
            "--data",
            &self.data,
            "--out",
            out,
            "--blocks",
            "0,1",
            "--seq-len",
            "16",
            "--qat",
            "q4_0",
            "--eval-every",
            "0",
            "-t",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend([
            "--steps".into(),
            steps.to_string(),
            "--checkpoint-every".into(),
            every.to_string(),
        ]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    fn train(&self, out: &str, steps: usize, every: usize, extra: &[&str]) -> Output {
        let a = self.train_args(out, steps, every, extra);
        run(&a.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), t).unwrap();
        }
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The byte range of a safetensors file's tensor data (after its 8-byte length and header).
fn safetensors_data(bytes: &[u8]) -> std::ops::Range<usize> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    8 + n..bytes.len()
}

/// A finished 4-step run with checkpoints at steps 2 and 4, and its good export.
fn trained(f: &Fixture) -> (PathBuf, Vec<u8>) {
    let out = f.path("good-run");
    let o = f.train(&out, 4, 2, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let gguf = f.path("good.gguf");
    let o = run(&["export-gguf", "--checkpoint", &out, "--out", &gguf]);
    assert!(o.status.success(), "{}", stderr(&o));
    (PathBuf::from(out), std::fs::read(&gguf).unwrap())
}

/// The acceptance's reproduction: 4 KiB overwritten in the middle of `model.safetensors`'s
/// data (or as much of it as the tiny file has), then export and resume.
#[test]
fn overwritten_checkpoint_data_is_refused_and_resume_falls_back() {
    let f = Fixture::new();
    let (good, _) = trained(&f);
    let damage = |run: &Path| {
        let p = run.join("step-00000004/model.safetensors");
        let mut b = std::fs::read(&p).unwrap();
        let data = safetensors_data(&b);
        let len = 4096.min(data.len() / 2);
        let at = data.start + (data.len() - len) / 2;
        for (i, x) in b[at..at + len].iter_mut().enumerate() {
            *x = (i as u8).wrapping_mul(151) ^ 0x5a;
        }
        std::fs::write(&p, b).unwrap();
    };
    // Export: one line naming the file; nothing written.
    let run1 = f.root.join("run1");
    copy_dir(&good, &run1);
    damage(&run1);
    let out = f.path("from-damaged.gguf");
    let err = refused(
        "4 KiB overwritten in model.safetensors; export-gguf",
        &run(&[
            "export-gguf",
            "--checkpoint",
            run1.to_str().unwrap(),
            "--out",
            &out,
        ]),
    );
    assert!(err.contains("step-00000004/model.safetensors") && err.contains("damaged"));
    assert!(!Path::new(&out).exists());
    // Resume with an older intact checkpoint: says so and continues from it.
    let o = f.train(run1.to_str().unwrap(), 6, 2, &["--resume"]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("warning:")
            && err.contains("model.safetensors")
            && err.contains("step-00000002"),
        "{err}"
    );
    assert_eq!(log_steps(&run1), [1, 2, 3, 4, 3, 4, 5, 6]);
    println!("| 4 KiB overwritten in model.safetensors; train --resume with keep 2 | ran: warned, resumed from step 2 |");
    // Resume with no older checkpoint: one line naming the file.
    let run2 = f.root.join("run2");
    copy_dir(&good, &run2);
    damage(&run2);
    std::fs::remove_dir_all(run2.join("step-00000002")).unwrap();
    let before = names(&run2.join("step-00000004"));
    let err = refused(
        "4 KiB overwritten in model.safetensors; train --resume, no older checkpoint",
        &f.train(run2.to_str().unwrap(), 6, 2, &["--resume"]),
    );
    assert!(err.contains("model.safetensors"), "{err}");
    assert_eq!(names(&run2.join("step-00000004")), before);
}

/// Seeded flips and truncations in every file of a checkpoint: export and resume refuse in one line, and the checkpoint is left as it was.
#[test]
fn flipped_or_truncated_checkpoint_files_are_refused() {
    let f = Fixture::new();
    let (good, _) = trained(&f);
    std::fs::remove_dir_all(good.join("step-00000002")).unwrap();
    let mut rng = StdRng::seed_from_u64(29);
    let files = [
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
        "SHA256SUMS",
    ];
    let mut n = 0;
    for (k, file) in files.iter().enumerate() {
        for (what, trial) in [("header", 0), ("data", 1), ("data", 2), ("truncated", 3)] {
            n += 1;
            let run_dir = f.root.join(format!("flip-{k}-{trial}"));
            copy_dir(&good, &run_dir);
            let p = run_dir.join("step-00000004").join(file);
            let mut b = std::fs::read(&p).unwrap();
            let at = match (what, file.ends_with(".safetensors")) {
                ("header", true) => rng.random_range(0..safetensors_data(&b).start),
                ("header", false) => rng.random_range(0..b.len().min(64)),
                ("data", true) => rng.random_range(safetensors_data(&b)),
                _ => rng.random_range(0..b.len()),
            };
            if what == "truncated" {
                b.truncate(at);
            } else {
                b[at] ^= 1 << rng.random_range(0..8);
            }
            std::fs::write(&p, &b).unwrap();
            let damaged = std::fs::read(&p).unwrap();
            let case = format!("{file} {what} (byte {at})");
            // Export reads the weights only, and still refuses a checkpoint damaged anywhere.
            let out = f.path(&format!("flip-{k}-{trial}.gguf"));
            refused(
                &format!("{case}; export-gguf"),
                &run(&[
                    "export-gguf",
                    "--checkpoint",
                    run_dir.to_str().unwrap(),
                    "--out",
                    &out,
                ]),
            );
            assert!(!Path::new(&out).exists());
            refused(
                &format!("{case}; train --resume"),
                &f.train(run_dir.to_str().unwrap(), 6, 2, &["--resume"]),
            );
            assert_eq!(std::fs::read(&p).unwrap(), damaged, "left as it was");
            assert!(!run_dir.join("step-00000006").exists());
        }
    }
    assert_eq!(n, 16);
}

/// Sets block `block` of tensor `name`'s data (a Q4_0 tensor) to an infinite fp16 scale.
fn poison_q4_0_scale(gguf: &[u8], name: &str, block: usize) -> Vec<u8> {
    let f = GgufFile::from_bytes("x.gguf", gguf.to_vec()).unwrap();
    let t = f.tensor_info(name).unwrap();
    assert_eq!(t.dtype, GgmlType::Q4_0);
    let at = (f.header.data_offset + t.offset) as usize + block * 18;
    let mut b = gguf.to_vec();
    b[at..at + 2].copy_from_slice(&0x7c00u16.to_le_bytes());
    b
}

/// The acceptance's GGUF case, then seeded flips and truncations of a GGUF.
#[test]
fn damaged_gguf_is_named_never_computed_with() {
    let f = Fixture::new();
    let (_, good) = trained(&f);
    let text = f.path("text.txt");
    std::fs::write(
        &text,
        "the thin heath in the inn at the thin heath ".repeat(20),
    )
    .unwrap();
    let file = GgufFile::from_bytes("good.gguf", good.clone()).unwrap();
    let q4 = file
        .tensors()
        .iter()
        .find(|t| t.dtype == GgmlType::Q4_0)
        .unwrap()
        .name
        .clone();
    let bad = f.path("inf-scale.gguf");
    std::fs::write(&bad, poison_q4_0_scale(&good, &q4, 1)).unwrap();
    let err = refused(
        "one infinite Q4_0 scale; inspect --check",
        &run(&["inspect", "--check", &bad]),
    );
    assert!(
        err.contains(&q4) && err.contains("block 1") && err.contains("inf"),
        "{err}"
    );
    assert!(run(&["inspect", "--check", &f.path("good.gguf")])
        .status
        .success());
    refused(
        "one infinite Q4_0 scale; eval perplexity",
        &run(&["eval", "perplexity", "-m", &bad, "-f", &text, "--ctx", "32"]),
    );
    refused(
        "one infinite Q4_0 scale; bench",
        &run(&[
            "bench",
            "tokens-per-second",
            "-m",
            &bad,
            "-p",
            "8",
            "-n",
            "4",
            "-r",
            "1",
        ]),
    );
    for recipe in ["q4_0", "q8_0"] {
        let out = f.path(&format!("requant-{recipe}.gguf"));
        let err = refused(
            &format!("one infinite Q4_0 scale; export-gguf --model --recipe {recipe}"),
            &run(&[
                "export-gguf",
                "--model",
                &bad,
                "--recipe",
                recipe,
                "--out",
                &out,
            ]),
        );
        assert!(err.contains(&q4), "{err}");
        assert!(!Path::new(&out).exists());
    }
    // Seeded flips anywhere (header or data) and truncations: the file is refused in one line
    // or is a valid file whose numbers are finite; never a panic or a NaN with exit 0.
    let mut rng = StdRng::seed_from_u64(2929);
    let header_end = file.header.data_offset as usize;
    for trial in 0..24 {
        let mut b = good.clone();
        let (what, at) = match trial % 3 {
            0 => ("header", rng.random_range(0..header_end)),
            1 => ("data", rng.random_range(header_end..b.len())),
            _ => ("truncated", rng.random_range(0..b.len())),
        };
        if what == "truncated" {
            b.truncate(at);
        } else {
            b[at] ^= 1 << rng.random_range(0..8);
        }
        let p = f.path(&format!("flip-{trial}.gguf"));
        std::fs::write(&p, &b).unwrap();
        let case = format!("GGUF {what} (byte {at}); eval perplexity");
        if what == "truncated" {
            refused(
                &case,
                &run(&["eval", "perplexity", "-m", &p, "-f", &text, "--ctx", "32"]),
            );
        } else {
            finite_or_refused(
                &case,
                &run(&["eval", "perplexity", "-m", &p, "-f", &text, "--ctx", "32"]),
            );
        }
    }
}

/// A damaged token cache is re-tokenized: the run is the one an intact cache gives.
#[test]
fn damaged_token_cache_is_tokenized_again() {
    let f = Fixture::new();
    let cache = f.root.join("cache");
    let train = |out: &str| {
        let a = f.train_args(out, 2, 2, &[]);
        Command::new(BIN)
            .args(&a)
            .env("QAT_DISTILL_CACHE", &cache)
            .output()
            .unwrap()
    };
    let o = train(&f.path("tc-a"));
    assert!(o.status.success(), "{}", stderr(&o));
    let entries: Vec<PathBuf> = std::fs::read_dir(cache.join("tokens"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!entries.is_empty());
    for p in &entries {
        let mut b = std::fs::read(p).unwrap();
        let last = b.len() - 3;
        b[last] ^= 0x10;
        std::fs::write(p, b).unwrap();
    }
    let o = train(&f.path("tc-b"));
    assert!(o.status.success(), "{}", stderr(&o));
    let loss = |d: &str| {
        std::fs::read_to_string(Path::new(d).join("log.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(loss(&f.path("tc-a")), loss(&f.path("tc-b")));
    println!("| token cache, a flipped id; train | ran: tokenized again, losses identical |");
}

/// `bash -c 'ulimit -f KIB; trap "" XFSZ; exec BIN …'`: a disk that is full after KIB KiB per
/// file (writes then fail with EFBIG instead of killing the process).
fn run_with_file_limit(kib: usize, args: &[String]) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!("ulimit -f {kib}; trap '' XFSZ; exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args)
        .env("QAT_DISTILL_CACHE", "/nonexistent-qat-distill-cache")
        .output()
        .unwrap()
}

/// A full disk or an unwritable place during a checkpoint and during export.
#[test]
fn full_disk_and_unwritable_output() {
    let f = Fixture::new();
    let (good, good_gguf) = trained(&f);
    let weights = std::fs::metadata(good.join("step-00000004/model.safetensors"))
        .unwrap()
        .len() as usize;
    // Resuming writes checkpoint 6 into a disk that cannot hold its weights file.
    let run_dir = f.root.join("full");
    copy_dir(&good, &run_dir);
    let before: Vec<Vec<u8>> = ["model.safetensors", "state.json"]
        .iter()
        .map(|n| std::fs::read(run_dir.join("step-00000004").join(n)).unwrap())
        .collect();
    let mut a = f.train_args(run_dir.to_str().unwrap(), 6, 2, &["--resume"]);
    a.push("--keep".into());
    a.push("1".into());
    refused(
        "disk full while writing a checkpoint",
        &run_with_file_limit(weights / 2048, &a),
    );
    assert_eq!(
        names(&run_dir),
        names(&good),
        "no new or partial checkpoint"
    );
    for (n, b) in ["model.safetensors", "state.json"].iter().zip(&before) {
        assert_eq!(
            &std::fs::read(run_dir.join("step-00000004").join(n)).unwrap(),
            b
        );
    }
    // Export into a disk that cannot hold the file; an existing file stays as it was.
    let out = f.path("full.gguf");
    std::fs::write(&out, b"previous").unwrap();
    let args: Vec<String> = [
        "export-gguf",
        "--checkpoint",
        good.to_str().unwrap(),
        "--out",
        &out,
        "--force",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    refused(
        "disk full while writing an export",
        &run_with_file_limit(good_gguf.len() / 2048, &args),
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"previous");
    assert_eq!(
        names(&f.root)
            .iter()
            .filter(|n| n.contains(".tmp."))
            .count(),
        0,
        "no temporary left"
    );
    // An output under a regular file.
    let blocker = f.path("blocker");
    std::fs::write(&blocker, b"x").unwrap();
    refused(
        "export into a path under a regular file",
        &run(&[
            "export-gguf",
            "--checkpoint",
            good.to_str().unwrap(),
            "--out",
            &format!("{blocker}/x.gguf"),
        ]),
    );
    refused(
        "train into a path under a regular file",
        &f.train(&format!("{blocker}/run"), 2, 2, &[]),
    );
}

/// Runs `args` and kills it with SIGKILL `delay` after `ready()` first holds (polled every
/// 0.2 ms); returns whether it was still running when killed.
fn kill_when(args: &[String], ready: impl Fn() -> bool, delay: Duration) -> bool {
    let mut c = Command::new(BIN)
        .args(args)
        .env("QAT_DISTILL_CACHE", "/nonexistent-qat-distill-cache")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !ready() {
        if c.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{args:?} hangs");
        std::thread::sleep(Duration::from_micros(200));
    }
    std::thread::sleep(delay);
    let running = c.try_wait().unwrap().is_none();
    c.kill().unwrap();
    c.wait().unwrap();
    running
}

fn has_temp(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().contains(".tmp."))
        })
        .unwrap_or(false)
}

/// kill -9 at seeded moments of a training run (a checkpoint every step) — while a checkpoint
/// is being written, or a little after — and of an export while its file is being written:
/// every checkpoint left loads and exports, the run resumes to its end, the export's name holds
/// nothing or the complete file, and the next run or export clears the temporaries.
#[test]
fn kill_9_mid_write_leaves_nothing_partial() {
    let f = Fixture::new();
    let (_, good_gguf) = trained(&f);
    let mut rng = StdRng::seed_from_u64(9);
    let mut killed = 0;
    for trial in 0..6 {
        let out = f.path(&format!("kill-{trial}"));
        let a = f.train_args(&out, 8, 1, &[]);
        let delay = Duration::from_micros(rng.random_range(0..3000));
        let dir = PathBuf::from(&out);
        // Half the trials: at a checkpoint's temporary directory; the rest: at checkpoint k.
        let k = rng.random_range(1..6);
        let at_temp = trial % 2 == 0;
        let ready = || {
            if at_temp {
                has_temp(&dir)
            } else {
                dir.join(format!("step-{k:08}")).exists()
            }
        };
        if !kill_when(&a, ready, delay) {
            continue;
        }
        killed += 1;
        let left = names(&dir);
        for ck in left.iter().filter(|n| n.starts_with("step-")) {
            let d = format!("{out}/{ck}");
            let gg = f.path(&format!("kill-{trial}-{ck}.gguf"));
            let o = run(&["export-gguf", "--checkpoint", &d, "--out", &gg]);
            assert!(o.status.success(), "{d} after kill -9: {}", stderr(&o));
        }
        let o = f.train(&out, 8, 1, &["--resume"]);
        assert!(o.status.success(), "resume after kill -9: {}", stderr(&o));
        assert!(
            !has_temp(&dir),
            "the killed run's temporary checkpoint is cleared by the next run"
        );
        println!(
            "| kill -9 during training ({}, +{delay:?}; left {}); export each checkpoint, resume | ran: all intact |",
            if at_temp { "a checkpoint being written".to_string() } else { format!("checkpoint {k} written") },
            left.join(" ")
        );
    }
    assert!(
        killed >= 4,
        "only {killed} of 6 runs were still running when killed"
    );
    // Export: killed while its temporary file is being written (or just after).
    let src = f.path("good-run");
    for trial in 0..6 {
        let name = format!("kill-export-{trial}.gguf");
        let out = f.path(&name);
        let a: Vec<String> = ["export-gguf", "--checkpoint", &src, "--out", &out]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let delay = Duration::from_micros(rng.random_range(0..2000));
        let root = f.root.clone();
        let prefix = format!(".{name}.tmp.");
        let ready = || {
            std::fs::read_dir(&root)
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        };
        let was_running = kill_when(&a, ready, delay);
        match std::fs::read(&out) {
            Ok(b) => assert_eq!(
                b, good_gguf,
                "a file under the output's name is the whole export"
            ),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        }
        println!(
            "| kill -9 during export (+{delay:?} after its temporary appeared, {}) | output {} |",
            if was_running {
                "killed"
            } else {
                "had finished"
            },
            if Path::new(&out).exists() {
                "complete"
            } else {
                "absent"
            }
        );
    }
    // The next export to the same names clears what the killed ones left.
    for trial in 0..6 {
        let out = f.path(&format!("kill-export-{trial}.gguf"));
        let o = run(&[
            "export-gguf",
            "--checkpoint",
            &src,
            "--out",
            &out,
            "--force",
        ]);
        assert!(o.status.success());
        assert_eq!(std::fs::read(&out).unwrap(), good_gguf);
    }
    assert!(
        !has_temp(&f.root),
        "temporaries of killed exports are cleared by the next export"
    );
}

/// A learning rate that blows the weights up (1e30, injected): the run stops at the first step
/// whose loss or gradient is not finite, names it, and writes no checkpoint of that state; the
/// checkpoint before it (finite but enormous weights) is refused by export.
#[test]
fn non_finite_training_stops_without_a_checkpoint() {
    let f = Fixture::new();
    let out = f.path("nan-run");
    let err = refused(
        "learning rate 1e30 (weights overflow); train",
        &f.train(
            &out,
            6,
            1,
            &["--lr", "1e30", "--warmup", "0", "--clip", "0"],
        ),
    );
    assert!(err.contains("became") && err.contains("at step"), "{err}");
    let step: usize = err
        .split("at step ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(step >= 2, "{err}");
    let left: Vec<String> = names(Path::new(&out))
        .into_iter()
        .filter(|n| n.starts_with("step-"))
        .collect();
    assert_eq!(
        left.last().cloned(),
        Some(format!("step-{:08}", step - 1)),
        "{err}"
    );
    assert!(!has_temp(Path::new(&out)));
    // The checkpoint before holds finite weights of ~1e30 (one step of lr 1e30): no Q4_0 fp16
    // scale can hold them, and export says so instead of writing infinite scales.
    let gguf = f.path("last-good.gguf");
    let err = refused(
        "weights of 1e30 (finite in f32, past fp16); export-gguf",
        &run(&["export-gguf", "--checkpoint", &out, "--out", &gguf]),
    );
    assert!(err.contains("as Q4_0") && err.contains("is inf"), "{err}");
    assert!(!Path::new(&gguf).exists());
}
