//! SVG plots of a run (plotters, SVG backend only).

use crate::fanout::FanResult;
use crate::rates::Curve;
use crate::report::unique;
use anyhow::Context;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

pub(crate) type Series = (String, Vec<(f64, f64)>);

fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 6] = [
        RGBColor(200, 40, 40),
        RGBColor(30, 90, 200),
        RGBColor(20, 150, 60),
        RGBColor(150, 60, 170),
        RGBColor(230, 140, 0),
        RGBColor(90, 90, 90),
    ];
    C[i % C.len()]
}

/// One chart: lines with point markers; `dashed` series are drawn dashed (same colour as the
/// solid series of the same index). `log_y` plots y on a log scale (values <= 0 dropped).
pub(crate) struct Chart<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub solid: Vec<Series>,
    pub dashed: Vec<Series>,
    pub diagonal: bool,
    pub log_x: bool,
    pub log_y: bool,
}

fn bounds(series: &[&Series], log: bool, y: bool) -> (f64, f64) {
    let vals = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| if y { p.1 } else { p.0 }))
        .filter(|v| v.is_finite() && (!log || *v > 0.0));
    let (lo, hi) = vals.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return if log { (0.1, 10.0) } else { (0.0, 1.0) };
    }
    if log {
        (lo / 1.5, hi * 1.5)
    } else {
        (0.0, (hi * 1.08).max(1.0))
    }
}

impl Chart<'_> {
    pub(crate) fn draw(&self, path: &Path) -> anyhow::Result<()> {
        let all: Vec<&Series> = self.solid.iter().chain(&self.dashed).collect();
        let (x0, x1) = bounds(&all, self.log_x, false);
        let (y0, y1) = bounds(&all, self.log_y, true);
        let root = SVGBackend::new(path, (760, 460)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let mut b = ChartBuilder::on(&root);
        b.caption(self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70);
        macro_rules! body {
            ($chart:expr) => {{
                let mut chart = $chart;
                let fmt = |v: &f64| {
                    if *v >= 10.0 || *v == 0.0 {
                        format!("{v:.0}")
                    } else {
                        format!("{v:.1}")
                    }
                };
                chart
                    .configure_mesh()
                    .x_labels(if self.log_x { 4 } else { 10 })
                    .y_labels(if self.log_y { 12 } else { 10 })
                    .x_label_formatter(&fmt)
                    .y_label_formatter(&fmt)
                    .x_desc(self.x_desc)
                    .y_desc(self.y_desc)
                    .draw()
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                if self.diagonal {
                    let d = x1.min(y1);
                    chart
                        .draw_series(LineSeries::new(
                            vec![(x0.max(y0), x0.max(y0)), (d, d)],
                            BLACK.mix(0.3).stroke_width(1),
                        ))
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?
                        .label("achieved = offered")
                        .legend(|(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.3))
                        });
                }
                let keep = |p: &&(f64, f64)| {
                    (!self.log_y || p.1 > 0.0) && (!self.log_x || p.0 > 0.0) && p.1.is_finite()
                };
                for (i, (name, pts)) in self.solid.iter().enumerate() {
                    let c = color(i);
                    let pts: Vec<(f64, f64)> = pts.iter().filter(keep).copied().collect();
                    chart
                        .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?
                        .label(name.as_str())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                        });
                    chart
                        .draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                }
                for (i, (name, pts)) in self.dashed.iter().enumerate() {
                    let c = color(i);
                    let pts: Vec<(f64, f64)> = pts.iter().filter(keep).copied().collect();
                    chart
                        .draw_series(DashedLineSeries::new(pts.clone(), 6, 4, c.stroke_width(2)))
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?
                        .label(name.as_str())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 8, y)], c.stroke_width(2))
                        });
                    chart
                        .draw_series(pts.iter().map(|p| TriangleMarker::new(*p, 4, c.filled())))
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                }
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperLeft)
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK.mix(0.4))
                    .draw()
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            }};
        }
        match (self.log_x, self.log_y) {
            (false, false) => body!(b
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?),
            (false, true) => body!(b
                .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
                .map_err(|e| anyhow::anyhow!("{e:?}"))?),
            (true, false) => body!(b
                .build_cartesian_2d((x0..x1).log_scale(), y0..y1)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?),
            (true, true) => body!(b
                .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
                .map_err(|e| anyhow::anyhow!("{e:?}"))?),
        }
        root.present()
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .with_context(|| format!("writing {}", path.display()))
    }
}

fn per_target<F: Fn(&crate::rates::Step) -> Option<f64>>(
    curves: &[&Curve],
    suffix: &str,
    f: F,
) -> Vec<Series> {
    curves
        .iter()
        .map(|c| {
            let pts = c
                .steps
                .iter()
                .filter_map(|s| Some((f64::from(s.offered), f(s)?)))
                .collect();
            (format!("{}{suffix}", c.target), pts)
        })
        .collect()
}

/// The overload plot: goodput (solid) and refused calls/s (dashed) against the offered rate
/// as a multiple of each target's base (sustained) rate.
fn overload(out: &Path, curves: &[Curve]) -> anyhow::Result<Option<PathBuf>> {
    if curves.is_empty() {
        return Ok(None);
    }
    let series = |f: &dyn Fn(&crate::rates::Step) -> f64, suffix: &str| -> Vec<Series> {
        curves
            .iter()
            .map(|c| {
                let base = f64::from(c.steps.iter().map(|s| s.offered).min().unwrap_or(1).max(1));
                let pts = c
                    .steps
                    .iter()
                    .map(|s| (f64::from(s.offered) / base, f(s)))
                    .collect();
                (format!("{}{suffix}", c.target), pts)
            })
            .collect()
    };
    let p = out.join("overload-goodput.svg");
    Chart {
        title: "overload: goodput and 503s at 1x, 2x, 4x the sustained rate",
        x_desc: "offered / sustained rate",
        y_desc: "calls/s",
        solid: series(&|s| s.stats.achieved, " goodput"),
        dashed: series(
            &|s| {
                let secs = s.calls as f64 / f64::from(s.offered.max(1));
                s.stats.refused as f64 / secs.max(1e-3)
            },
            " refused (503)",
        ),
        diagonal: false,
        log_x: false,
        log_y: false,
    }
    .draw(&p)?;
    Ok(Some(p))
}

/// Writes the plots; returns their paths.
pub fn all(
    out: &Path,
    curves: &[Curve],
    fan: &[FanResult],
    overloads: &[Curve],
) -> anyhow::Result<Vec<PathBuf>> {
    let mut written: Vec<PathBuf> = overload(out, overloads)?.into_iter().collect();
    for scn in unique(curves.iter().map(|c| c.scenario.as_str())) {
        let cs: Vec<&Curve> = curves.iter().filter(|c| c.scenario == scn).collect();
        let p = out.join(format!("{scn}-goodput.svg"));
        Chart {
            title: &format!("{scn}: achieved vs offered rate"),
            x_desc: "offered (calls/s)",
            y_desc: "achieved: successful calls/s",
            solid: per_target(&cs, "", |s| Some(s.stats.achieved)),
            dashed: Vec::new(),
            diagonal: true,
            log_x: false,
            log_y: false,
        }
        .draw(&p)?;
        written.push(p);
        let p = out.join(format!("{scn}-failures.svg"));
        Chart {
            title: &format!("{scn}: failed calls"),
            x_desc: "offered (calls/s)",
            y_desc: "failed or unfinished calls (% of offered)",
            solid: per_target(&cs, "", |s| {
                let bad = s.calls.saturating_sub(s.stats.successful);
                Some(100.0 * bad as f64 / s.calls.max(1) as f64)
            }),
            dashed: Vec::new(),
            diagonal: false,
            log_x: false,
            log_y: false,
        }
        .draw(&p)?;
        written.push(p);
        let p = out.join(format!("{scn}-latency.svg"));
        Chart {
            title: &format!("{scn}: response time (SIPp rtd, 1 ms resolution)"),
            x_desc: "offered (calls/s)",
            y_desc: "ms (log)",
            solid: per_target(&cs, " p50", |s| s.latency.p50_ms.map(|v| v.max(0.5))),
            dashed: per_target(&cs, " p99", |s| s.latency.p99_ms.map(|v| v.max(0.5))),
            diagonal: false,
            log_x: false,
            log_y: true,
        }
        .draw(&p)?;
        written.push(p);
    }
    if !fan.is_empty() {
        let targets = unique(fan.iter().map(|f| f.target.as_str()));
        let series = |suffix: &str, f: &dyn Fn(&FanResult) -> Option<f64>| -> Vec<Series> {
            targets
                .iter()
                .map(|t| {
                    let pts = fan
                        .iter()
                        .filter(|r| r.target == *t)
                        .filter_map(|r| Some((r.watchers as f64, f(r)?)))
                        .collect();
                    (format!("{t}{suffix}"), pts)
                })
                .collect()
        };
        let p = out.join("fanout-latency.svg");
        Chart {
            title: "fan-out: PUBLISH → NOTIFY latency per watcher",
            x_desc: "watchers W (log)",
            y_desc: "ms (log)",
            solid: series(" p50", &|r| r.p50_ms),
            dashed: series(" p99", &|r| r.p99_ms),
            diagonal: false,
            log_x: true,
            log_y: true,
        }
        .draw(&p)?;
        written.push(p);
    }
    Ok(written)
}
