//! The training curves as a PNG next to the checkpoints: loss (total, KD, CE) per step and the
//! held-out perplexity at each evaluation, read back from the run's `log.jsonl`; and several
//! runs' curves on one picture (`qat-distill plot`), for comparing two settings of one recipe.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

/// Fonts tried for the labels; without one the curves are drawn unlabelled.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

fn register_font() -> bool {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ONCE.get_or_init(|| {
        FONTS.iter().any(|p| {
            std::fs::read(p).ok().is_some_and(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    })
}

struct Curves {
    loss: Vec<(f64, f64)>,
    kd: Vec<(f64, f64)>,
    ce: Vec<(f64, f64)>,
    ppl: Vec<(f64, f64)>,
    /// The held-out soft loss (KL to the teacher at T): a distillation's own objective.
    val_kd: Vec<(f64, f64)>,
}

fn read(log: &Path) -> anyhow::Result<Curves> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let mut c = Curves {
        loss: vec![],
        kd: vec![],
        ce: vec![],
        ppl: vec![],
        val_kd: vec![],
    };
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let step = v["step"].as_f64().unwrap_or(0.0);
        match v["event"].as_str() {
            Some("step") => {
                for (curve, key) in [(&mut c.loss, "loss"), (&mut c.kd, "kd"), (&mut c.ce, "ce")] {
                    if let Some(y) = v[key].as_f64().filter(|y| y.is_finite()) {
                        curve.push((step, y));
                    }
                }
            }
            Some("eval") => {
                if let Some(y) = v["val"]["ppl"]
                    .as_f64()
                    .filter(|y| y.is_finite() && *y > 0.0)
                {
                    c.ppl.push((step, y));
                }
                if let Some(y) = v["val"]["kd"].as_f64().filter(|y| y.is_finite()) {
                    c.val_kd.push((step, y));
                }
            }
            _ => {}
        }
    }
    // A resumed run logs again the steps after its last checkpoint: keep the latest value of
    // each step, in step order.
    for curve in [&mut c.loss, &mut c.kd, &mut c.ce, &mut c.ppl, &mut c.val_kd] {
        let latest: std::collections::BTreeMap<u64, f64> =
            curve.iter().map(|&(x, y)| (x as u64, y)).collect();
        *curve = latest.into_iter().map(|(x, y)| (x as f64, y)).collect();
    }
    Ok(c)
}

fn range(points: &[&[(f64, f64)]]) -> (f64, f64, f64, f64) {
    let all = points.iter().flat_map(|p| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return (0.0, 1.0, 0.0, 1.0);
    }
    (
        x0,
        x1.max(x0 + 1.0),
        y0.min(y1 - 1e-9),
        y1 + 0.05 * (y1 - y0).abs().max(1e-3),
    )
}

type Chart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// One panel with its axes over `x × y`: labelled (caption, tick labels, "step") when a font
/// was found, bare otherwise.
fn panel<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    labels: bool,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> anyhow::Result<Chart<'a, 'b>> {
    let mut b = ChartBuilder::on(area);
    b.margin(12)
        .x_label_area_size(if labels { 30 } else { 5 })
        .y_label_area_size(if labels { 50 } else { 5 });
    if labels {
        b.caption(caption, ("sans-serif", 20));
    }
    let mut chart = b.build_cartesian_2d(x, y)?;
    let mut mesh = chart.configure_mesh();
    if labels {
        mesh.x_desc("step");
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw()?;
    Ok(chart)
}

/// A temp name beside `png` (the encoder picks the format from the extension, so it ends in
/// .png too), renamed over `png` once the picture is drawn.
fn temp_beside(png: &Path) -> std::path::PathBuf {
    png.with_file_name(format!(
        ".{}.tmp.png",
        png.file_stem()
            .map(|s| s.to_string_lossy())
            .unwrap_or_default()
    ))
}

/// Renders `log` into `png` (written under a temp name and renamed).
pub fn plot_log(log: &Path, png: &Path) -> anyhow::Result<()> {
    let c = read(log)?;
    let labels = register_font();
    let tmp = temp_beside(png);
    {
        let root = BitMapBackend::new(&tmp, (1000, 700)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(420);
        let (x0, x1, y0, y1) = range(&[&c.loss, &c.kd, &c.ce]);
        let mut chart = panel(
            &top,
            "training loss per token",
            labels,
            x0..x1,
            y0.min(0.0)..y1,
        )?;
        for (pts, color, name) in [
            (&c.loss, BLACK, "total"),
            (&c.kd, BLUE, "KD (KL at T)"),
            (&c.ce, RED, "CE"),
        ] {
            let s =
                chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?;
            if labels {
                s.label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            }
        }
        if labels {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
        let (x0p, x1p, p0, p1) = range(&[&c.ppl]);
        let mut chart = panel(
            &bottom,
            "held-out perplexity",
            labels,
            x0.min(x0p)..x1.max(x1p),
            (p0 * 0.9).max(1e-3)..p1,
        )?;
        chart.draw_series(LineSeries::new(
            c.ppl.iter().copied(),
            GREEN.stroke_width(2),
        ))?;
        chart.draw_series(c.ppl.iter().map(|&p| Circle::new(p, 4, GREEN.filled())))?;
        root.present()?;
    }
    std::fs::rename(&tmp, png).with_context(|| format!("writing {}", png.display()))?;
    Ok(())
}

/// One run's curves for [`plot_runs`] and its summary line.
pub struct RunCurves {
    pub label: String,
    curves: Curves,
}

impl RunCurves {
    /// The curves in `log` (a run's `log.jsonl`), named `label`.
    pub fn read(log: &Path, label: String) -> anyhow::Result<Self> {
        let curves = read(log)?;
        anyhow::ensure!(
            !curves.loss.is_empty(),
            "{}: no training steps logged",
            log.display()
        );
        Ok(Self { label, curves })
    }

    /// Steps logged, the mean loss over the last `tail` of them, and the last held-out
    /// KL to the teacher and perplexity (each with its step).
    pub fn summary(&self, tail: usize) -> Summary {
        let l = &self.curves.loss;
        let last = &l[l.len().saturating_sub(tail)..];
        Summary {
            steps: l.len(),
            mean_loss: last.iter().map(|p| p.1).sum::<f64>() / last.len().max(1) as f64,
            val_kd: self.curves.val_kd.last().copied(),
            ppl: self.curves.ppl.last().copied(),
        }
    }
}

/// What `plot` prints per run.
pub struct Summary {
    pub steps: usize,
    pub mean_loss: f64,
    /// `(step, value)` of the last evaluation.
    pub val_kd: Option<(f64, f64)>,
    pub ppl: Option<(f64, f64)>,
}

/// The running mean of `window` steps (fewer at the start): per-step losses of different
/// sequences scatter more than two settings differ, so the picture compares their trends.
fn smoothed(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len());
    let mut sum = 0.0;
    for (i, &(x, y)) in points.iter().enumerate() {
        sum += y;
        if i >= window {
            sum -= points[i - window].1;
        }
        out.push((x, sum / (i + 1).min(window) as f64));
    }
    out
}

/// Several runs on one picture: each run's training loss (faint per step, bold as the mean of
/// `window` steps) above, its held-out perplexity below, one colour per run.
pub fn plot_runs(runs: &[RunCurves], window: usize, png: &Path) -> anyhow::Result<()> {
    const COLORS: [RGBColor; 6] = [
        RGBColor(0, 0, 0),
        RGBColor(220, 50, 32),
        RGBColor(0, 90, 181),
        RGBColor(0, 150, 60),
        RGBColor(200, 120, 0),
        RGBColor(120, 40, 160),
    ];
    let labels = register_font();
    let tmp = temp_beside(png);
    {
        let root = BitMapBackend::new(&tmp, (1000, 700)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(420);
        let losses: Vec<&[(f64, f64)]> = runs.iter().map(|r| &r.curves.loss[..]).collect();
        let (x0, x1, y0, y1) = range(&losses);
        let caption = format!("training loss per token (bold: mean of {window} steps)");
        let mut chart = panel(&top, &caption, labels, x0..x1, y0.min(0.0)..y1)?;
        for (r, &color) in runs.iter().zip(COLORS.iter().cycle()) {
            chart.draw_series(LineSeries::new(
                r.curves.loss.iter().copied(),
                color.mix(0.25).stroke_width(1),
            ))?;
            let s = chart.draw_series(LineSeries::new(
                smoothed(&r.curves.loss, window),
                color.stroke_width(3),
            ))?;
            if labels {
                s.label(r.label.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            }
        }
        if labels {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
        let (left, right) = bottom.split_horizontally(500);
        type Pick = fn(&Curves) -> &[(f64, f64)];
        let panels: [(_, _, Pick); 2] = [
            (&left, "held-out KL to the teacher", |c| &c.val_kd),
            (&right, "held-out perplexity", |c| &c.ppl),
        ];
        for (area, caption, pick) in panels {
            let slices: Vec<&[(f64, f64)]> = runs.iter().map(|r| pick(&r.curves)).collect();
            let (_, _, v0, v1) = range(&slices);
            let mut chart = panel(area, caption, labels, x0..x1, (v0 * 0.98).max(1e-6)..v1)?;
            for (pts, &color) in slices.iter().zip(COLORS.iter().cycle()) {
                chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?;
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            }
        }
        root.present()?;
    }
    std::fs::rename(&tmp, png).with_context(|| format!("writing {}", png.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::smoothed;

    #[test]
    fn running_mean_of_a_window() {
        let pts: Vec<(f64, f64)> = [4.0, 2.0, 6.0, 0.0]
            .iter()
            .enumerate()
            .map(|(i, &y)| (i as f64, y))
            .collect();
        let m: Vec<f64> = smoothed(&pts, 2).into_iter().map(|p| p.1).collect();
        assert_eq!(m, [4.0, 3.0, 4.0, 3.0]);
    }
}
