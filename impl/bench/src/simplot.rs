//! Plots of the simulator's evaluation: the CSV files `sim_eval --csv` writes (one line per
//! run), drawn against the parameter a sweep varied (peers, groups or subscribers per group),
//! one line per fault setting (`root_failures`, `churn`).

use crate::plot::{Chart, Series};
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One run: column name → value (every `sim_eval` column is a number).
type Row = BTreeMap<String, f64>;

/// Reads a `sim_eval` CSV file; errors name the file, line and column.
pub fn read(path: &Path) -> anyhow::Result<Vec<Row>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

fn parse(text: &str) -> anyhow::Result<Vec<Row>> {
    // (line number from 1, line), blank lines skipped.
    let mut lines = (1..)
        .zip(text.lines())
        .filter(|(_, l)| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().context("empty file")?.1.split(',').collect();
    anyhow::ensure!(
        header.contains(&"n") && header.contains(&"delivery_ratio"),
        "not a sim_eval CSV (no n or delivery_ratio column)"
    );
    lines
        .map(|(line, l)| {
            let cells: Vec<&str> = l.split(',').collect();
            anyhow::ensure!(
                cells.len() == header.len(),
                "line {line}: {} cells for {} columns",
                cells.len(),
                header.len()
            );
            header
                .iter()
                .zip(cells)
                .map(|(h, c)| {
                    let v = c.trim().parse::<f64>().with_context(|| {
                        format!("line {line}: column {h}: {c:?} is not a number")
                    })?;
                    Ok((h.to_string(), v))
                })
                .collect()
        })
        .collect()
}

fn get(r: &Row, k: &str) -> f64 {
    r.get(k).copied().unwrap_or(0.0)
}

/// The fault setting of a run, as a legend label.
fn setting(r: &Row) -> String {
    let (roots, churn) = (get(r, "root_failures"), get(r, "churn"));
    match (roots > 0.0, churn > 0.0) {
        (false, false) => "no faults".into(),
        (true, false) => format!("{:.0} % of roots crash", roots * 100.0),
        (false, true) => format!("churn {churn}/s"),
        (true, true) => format!("{:.0} % of roots + churn {churn}/s", roots * 100.0),
    }
}

/// Which column a set of runs varies: the first of n, groups, subs with more than one value.
pub fn varied(rows: &[Row]) -> Option<&'static str> {
    ["n", "groups", "subs"].into_iter().find(|k| {
        let mut v: Vec<u64> = rows.iter().map(|r| get(r, k) as u64).collect();
        v.sort_unstable();
        v.dedup();
        v.len() > 1
    })
}

/// One series per fault setting of `f` against column `x`, each suffixed with `suffix`.
fn series(rows: &[Row], x: &str, suffix: &str, f: &dyn Fn(&Row) -> f64) -> Vec<Series> {
    let mut by: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in rows {
        by.entry(setting(r)).or_default().push((get(r, x), f(r)));
    }
    by.into_iter()
        .map(|(name, mut pts)| {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            (format!("{name}{suffix}"), pts)
        })
        .collect()
}

/// One line named `name` of `f` against column `x` over all of `rows`, sorted by x.
fn line(rows: &[Row], x: &str, name: &str, f: &dyn Fn(&Row) -> f64) -> Series {
    let mut pts: Vec<(f64, f64)> = rows.iter().map(|r| (get(r, x), f(r))).collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    (name.to_string(), pts)
}

/// Draws the runs against the column they vary; returns the files written (`sim-<x>-*.svg`).
pub fn draw(rows: &[Row], out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let x = varied(rows).context("no parameter varies across these runs (n, groups, subs)")?;
    let (x_desc, xn) = match x {
        "n" => ("peers N (log)", "N"),
        "groups" => ("groups G (log)", "G"),
        _ => ("subscribers per group S (log)", "S"),
    };
    let mut written = Vec::new();
    let mut chart = |name: &str, c: Chart| -> anyhow::Result<()> {
        let p = out.join(format!("sim-{x}-{name}.svg"));
        c.draw(&p)?;
        written.push(p);
        Ok(())
    };
    chart(
        "delivery",
        Chart {
            title: &format!("simulator: delivery ratio against {xn}"),
            x_desc,
            y_desc: "subscriptions notified / subscriptions alive",
            solid: series(rows, x, "", &|r| get(r, "delivery_ratio")),
            dashed: Vec::new(),
            diagonal: false,
            log_x: true,
            log_y: false,
        },
    )?;
    chart(
        "delay",
        Chart {
            title: &format!("simulator: publish → NOTIFY delay against {xn}"),
            x_desc,
            y_desc: "simulated ms (log)",
            solid: series(rows, x, " mean", &|r| get(r, "delay_ms_mean")),
            dashed: series(rows, x, " p99", &|r| get(r, "delay_ms_p99")),
            diagonal: false,
            log_x: true,
            log_y: true,
        },
    )?;
    let clean: Vec<Row> = rows
        .iter()
        .filter(|r| setting(r) == "no faults")
        .cloned()
        .collect();
    let base = if clean.is_empty() { rows } else { &clean[..] };
    let mut solid = series(base, x, ": busiest peer", &|r| {
        get(r, "busiest_notification_load")
    });
    solid.extend(series(base, x, ": mean peer", &|r| {
        get(r, "mean_notification_load")
    }));
    chart(
        "load",
        Chart {
            title: &format!("simulator: notification load per peer against {xn}"),
            x_desc,
            y_desc: "multicasts sent + received + local NOTIFYs (log)",
            solid,
            dashed: vec![line(base, x, "2/N of the central server's Σ S_i", &|r| {
                2.0 * get(r, "central_load") / get(r, "n").max(1.0)
            })],
            diagonal: false,
            log_x: true,
            log_y: true,
        },
    )?;
    if x == "n" {
        chart(
            "hops",
            Chart {
                title: "simulator: overlay hops against N",
                x_desc,
                y_desc: "hops",
                solid: [
                    ("hops_mean", "publisher → root → subscriber, mean"),
                    ("lookup_hops_mean", "lookup, mean"),
                    ("ceil_log16_n", "⌈log16 N⌉"),
                ]
                .iter()
                .map(|(col, name)| line(base, x, name, &|r| get(r, col)))
                .collect(),
                dashed: Vec::new(),
                diagonal: false,
                log_x: true,
                log_y: false,
            },
        )?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "n,groups,subs,delivery_ratio,root_failures,churn\n\
                       1000,100,10,1.0,0,0\n\
                       10000,1000,10,1.0,0,0\n\
                       10000,1000,10,0.9999,0.1,10\n";

    #[test]
    fn reads_runs_and_finds_the_varied_column() {
        let rows = parse(CSV).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(varied(&rows), Some("n"));
        assert_eq!(setting(&rows[2]), "10 % of roots + churn 10/s");
        let s = series(&rows, "n", "", &|r| get(r, "delivery_ratio"));
        let names: Vec<&str> = s.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(names, ["10 % of roots + churn 10/s", "no faults"]);
        assert_eq!(s[1].1, [(1000.0, 1.0), (10000.0, 1.0)]);
    }

    #[test]
    fn bad_files_are_named_precisely() {
        let e = parse("n,delivery_ratio\n1000,x\n").unwrap_err();
        assert!(
            format!("{e:#}").contains("line 2: column delivery_ratio"),
            "{e:#}"
        );
        let e = parse("n,delivery_ratio\n\n1000\n").unwrap_err();
        assert!(
            format!("{e:#}").contains("line 3: 1 cells for 2 columns"),
            "{e:#}"
        );
        assert!(parse("a,b\n1,2\n").is_err());
        assert!(parse("").is_err());
    }
}
