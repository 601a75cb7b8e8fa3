//! Latency percentile curves of several runs on one chart (SVG, no font dependencies).
//!
//! One panel per workload row; in each, one curve per run. The x axis is the percentile on
//! the usual HDR scale (log of 1/(1-q): 90%, 99%, 99.9% equally spaced), the y axis the
//! latency in microseconds, log scale. Contended and mixed runs plot the wait (acquire),
//! the others the acquire+release pair.

use std::path::Path;

use anyhow::{anyhow, bail};
use plotters::prelude::*;

use crate::report::{us_unit, RunResult};
use crate::stats::Latency;

/// The curve a run is drawn by, and what it is.
fn curve_of(r: &RunResult) -> Option<(&Latency, &'static str)> {
    match &r.workload[..] {
        "contended" | "mixed" => r.acquire_us.as_ref().map(|l| (l, "wait")),
        "hold-many" => r.acquire_us.as_ref().map(|l| (l, "acquire")),
        _ => r.pair_us.as_ref().map(|l| (l, "acquire+release")),
    }
}

/// x of a percentile: log10(1 / (1 - q)).
fn x_of(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(1e-9);
    -rest.log10()
}

/// The label of an x: 0 -> "0%", 1 -> "90%", 2 -> "99%", 3 -> "99.9%".
fn percent_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let decimals = if x <= 2.0 {
        0
    } else {
        (x - 2.0).ceil() as usize
    };
    format!("{p:.decimals$}%")
}

/// Microseconds on the y axis: "100us", "10ms", "1s".
fn latency_label(y: f64) -> String {
    if y >= 1e6 {
        format!("{}s", y / 1e6)
    } else if y >= 1e3 {
        format!("{}ms", y / 1e3)
    } else {
        format!("{y:.0}us")
    }
}

/// The same color for a target in every panel and every chart (tab10 colors).
fn color_of(name: &str, i: usize) -> RGBColor {
    const TAB10: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    let fixed = match name {
        "turnstile" => Some(2),
        "turnstile-bin" => Some(4),
        "redis" => Some(3),
        "redis-fsync" => Some(1),
        "etcd" => Some(0),
        "echo" => Some(7),
        _ => None,
    };
    TAB10[fixed.unwrap_or(i % TAB10.len())]
}

/// Draws every run with a latency curve into `path` (SVG); `names` tells runs apart when
/// two in a row have the same target (e.g. from different files).
pub fn plot(path: &Path, runs: &[RunResult], names: Option<&[String]>) -> anyhow::Result<()> {
    let mut rows: Vec<&str> = Vec::new();
    for r in runs {
        if curve_of(r).is_some_and(|(l, _)| l.curve.len() > 1) && !rows.contains(&&r.label[..]) {
            rows.push(&r.label);
        }
    }
    if rows.is_empty() {
        bail!("no run with latencies to plot");
    }
    let height = 420 * rows.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let panels = root.split_evenly((rows.len(), 1));
    for (panel, row) in panels.iter().zip(&rows) {
        let series: Vec<(String, &Latency, &str)> = runs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.label == *row)
            .filter_map(|(i, r)| {
                let (l, what) = curve_of(r)?;
                let name = names.map_or_else(|| r.target.clone(), |n| n[i].clone());
                Some((name, l, what))
            })
            .collect();
        let points = |l: &Latency| -> Vec<(f64, f64)> {
            l.curve
                .iter()
                .filter(|p| p[0] < 100.0)
                .map(|p| (x_of(p[0]), p[1].max(1.0)))
                .collect()
        };
        let all: Vec<(f64, f64)> = series.iter().flat_map(|(_, l, _)| points(l)).collect();
        let x_max = all.iter().map(|p| p.0).fold(1.0, f64::max).ceil();
        let y_min = all.iter().map(|p| p.1).fold(f64::MAX, f64::min).max(1.0);
        let y_max = all.iter().map(|p| p.1).fold(1.0, f64::max);
        let what = series.first().map_or("", |s| s.2);
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{row}: latency of {what}"), ("sans-serif", 20))
            .margin(12)
            .margin_right(40)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max, (y_min / 1.3..y_max * 1.3).log_scale())
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_labels(x_max as usize + 1)
            .x_label_formatter(&|x| percent_label(*x))
            .y_label_formatter(&|y| latency_label(*y))
            .x_desc("percentile")
            .y_desc("latency")
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for (i, (name, l, _)) in series.iter().enumerate() {
            let color = color_of(name, i);
            chart
                .draw_series(LineSeries::new(points(l), color.stroke_width(2)))
                .map_err(|e| anyhow!("{e}"))?
                .label(format!(
                    "{name}: p50 {}, p99 {}",
                    us_unit(l.p50),
                    us_unit(l.p99)
                ))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis() {
        assert!(x_of(0.0).abs() < 1e-12);
        assert!((x_of(99.0) - 2.0).abs() < 1e-9);
        assert!((x_of(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(percent_label(0.0), "0%");
        assert_eq!(percent_label(1.0), "90%");
        assert_eq!(percent_label(2.0), "99%");
        assert_eq!(percent_label(3.0), "99.9%");
        assert_eq!(percent_label(4.0), "99.99%");
        assert_eq!(latency_label(100.0), "100us");
        assert_eq!(latency_label(10_000.0), "10ms");
        assert_eq!(latency_label(1e6), "1s");
    }
}
