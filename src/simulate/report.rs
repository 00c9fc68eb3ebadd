//! How a simulation is shown: a terminal table, the per-minute timeline as CSV, and an SVG
//! chart of demand against each policy's serving capacity.

use super::{Replay, Run, Summary, World};
use std::fmt::Write as _;
use std::io::{self, Write};

/// A fixed-width table, one row per policy.
pub fn table(summaries: &[Summary]) -> String {
    let width = name_width(summaries);
    let mut out = format!(
        "{:<width$}  {:>10}  {:>10}  {:>13}  {:>9}  {:>9}  {:>11}  {:>9}  {:>14}\n",
        "policy",
        "cost×limit",
        "unserved",
        "overload min",
        "launches",
        "retired",
        &format!("within {}m", super::SHORT_LIVED_MINUTES),
        "peak",
        "instance-min"
    );
    for s in summaries {
        let _ = writeln!(
            out,
            "{:<width$}  {:>10.3}  {:>9.4}%  {:>13}  {:>9}  {:>9}  {:>11}  {:>9}  {:>14}",
            s.policy,
            s.cost_ratio,
            s.unserved_fraction * 100.0,
            s.overload_minutes,
            s.launches,
            s.retirements,
            s.short_lived,
            s.peak_instances,
            s.instance_minutes
        );
    }
    if let Some(s) = summaries.first() {
        let _ = writeln!(
            out,
            "zero-loss limit: {} instance-minutes (Σ ceil(demand / capacity))",
            s.limit_instance_minutes
        );
    }
    out
}

/// The width of the policy column: the longest name, at least 6.
fn name_width(summaries: &[Summary]) -> usize {
    summaries
        .iter()
        .map(|s| s.policy.chars().count())
        .max()
        .unwrap_or(6)
        .max(6)
}

/// The money side of the runs: dollars (when priced), the share of instance-minutes on
/// Spot, Spot interruptions, and the loss next to them.
pub fn money_table(summaries: &[Summary]) -> String {
    let width = name_width(summaries);
    let mut out = format!(
        "{:<width$}  {:>12}  {:>9}  {:>13}  {:>10}\n",
        "policy", "USD", "on Spot", "interruptions", "unserved"
    );
    for s in summaries {
        let usd = s
            .usd
            .map(|u| format!("{u:.2}"))
            .unwrap_or_else(|| "-".into());
        let spot = if s.instance_minutes > 0 {
            s.spot_instance_minutes as f64 / s.instance_minutes as f64 * 100.0
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:>12}  {:>8.1}%  {:>13}  {:>9.4}%",
            s.policy,
            usd,
            spot,
            s.interruptions,
            s.unserved_fraction * 100.0
        );
    }
    out
}

/// `minute,timestamp,demand,capacity_ready,instances_booting,served,instances_spot,spot_usd_per_hour`:
/// `capacity_ready` is the number of instances (units, with weights) serving that minute;
/// billed instances are `capacity_ready + instances_booting`; `spot_usd_per_hour` is what
/// the billed Spot instances cost per hour that minute, each at its pool's price (0
/// without a price table).
pub fn timeline_csv<W: Write>(out: &mut W, run: &Run, replay: &Replay) -> io::Result<()> {
    let mut w = io::BufWriter::new(out);
    writeln!(
        w,
        "minute,timestamp,demand,capacity_ready,instances_booting,served,instances_spot,spot_usd_per_hour"
    )?;
    for (i, m) in run.minutes.iter().enumerate() {
        let Some(t) = replay.times.get(i) else {
            break;
        };
        writeln!(
            w,
            "{i},{},{},{},{},{},{},{}",
            t.format("%Y-%m-%dT%H:%M:%SZ"),
            m.demand,
            m.ready,
            m.booting,
            m.served,
            m.spot,
            run.spot_usd_at(i)
        )?;
    }
    w.flush()
}

const COLORS: [&str; 6] = [
    "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Demand (grey, filled) against each policy's serving capacity (ready × capacity) over the
/// whole trace. Long traces are cut into at most 1,500 columns, each drawn at its busiest
/// minute.
pub fn plot_svg(
    runs: &[Run],
    summaries: &[Summary],
    world: World,
    replay: &Replay,
    title: &str,
) -> String {
    let (w, h) = (1200.0_f64, 520.0_f64);
    let (left, right, top, bottom) = (70.0, 20.0, 40.0, 150.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let n = runs.first().map(|r| r.minutes.len()).unwrap_or(0);
    let columns = n.clamp(1, 1500);
    let per = n.div_ceil(columns).max(1);
    let columns = n.div_ceil(per).max(1);
    // Each column is drawn at its busiest minute: demand then, and each policy's serving
    // capacity at that same minute, so a shortfall at a peak is never averaged away.
    let busiest: Vec<usize> = (0..columns)
        .map(|c| {
            let from = c * per;
            let to = ((c + 1) * per).min(n);
            runs.first()
                .and_then(|r| {
                    (from..to).max_by(|a, b| r.minutes[*a].demand.total_cmp(&r.minutes[*b].demand))
                })
                .unwrap_or(from)
        })
        .collect();
    let demand_max: Vec<f64> = busiest
        .iter()
        .map(|&i| runs.first().map(|r| r.minutes[i].demand).unwrap_or(0.0))
        .collect();
    let cap_min: Vec<Vec<f64>> = runs
        .iter()
        .map(|r| {
            busiest
                .iter()
                .map(|&i| f64::from(r.minutes[i].ready) * world.capacity)
                .collect()
        })
        .collect();
    let ymax = demand_max
        .iter()
        .copied()
        .chain(cap_min.iter().flatten().copied().filter(|v| v.is_finite()))
        .fold(1.0, f64::max)
        * 1.05;
    let x = |c: usize| left + pw * c as f64 / columns as f64;
    let y = |v: f64| top + ph * (1.0 - (v / ymax).clamp(0.0, 1.0));
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        s,
        r#"<rect width="{w}" height="{h}" fill="white"/><text x="{left}" y="24" font-size="15">{}</text>"#,
        esc(title)
    );
    // Axes and grid.
    for i in 0..=4 {
        let v = ymax * f64::from(i) / 4.0;
        let yy = y(v);
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + pw,
            left - 6.0,
            yy + 4.0,
            short(v)
        );
    }
    let days = n as f64 / 1440.0;
    let ticks = 8usize;
    for i in 0..=ticks {
        let minute = ((n as f64 * i as f64 / ticks as f64) as usize).min(n.saturating_sub(1));
        let xx = left + pw * i as f64 / ticks as f64;
        let label = replay
            .times
            .get(minute)
            .map(|t| {
                t.format(if days > 2.0 {
                    "%Y-%m-%d"
                } else {
                    "%m-%d %H:%M"
                })
                .to_string()
            })
            .unwrap_or_default();
        let _ = write!(
            s,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{top}" y2="{}" stroke="#eee"/><text x="{xx:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            top + ph,
            top + ph + 16.0
        );
    }
    let _ = write!(
        s,
        r##"<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">requests per minute</text>"##,
        top + ph / 2.0,
        top + ph / 2.0
    );
    // Demand as a filled area.
    let mut d = format!("M{:.1},{:.1}", x(0), y(0.0));
    for (c, v) in demand_max.iter().enumerate() {
        let _ = write!(
            d,
            " L{:.1},{:.1} L{:.1},{:.1}",
            x(c),
            y(*v),
            x(c + 1),
            y(*v)
        );
    }
    let _ = write!(d, " L{:.1},{:.1} Z", x(columns), y(0.0));
    let _ = write!(s, r##"<path d="{d}" fill="#bbb" stroke="none"/>"##);
    // Capacities as steps.
    for (i, caps) in cap_min.iter().enumerate() {
        let mut d = String::new();
        for (c, v) in caps.iter().enumerate() {
            let v = if v.is_finite() { *v } else { 0.0 };
            let cmd = if c == 0 { 'M' } else { 'L' };
            let _ = write!(
                d,
                "{cmd}{:.1},{:.1} L{:.1},{:.1} ",
                x(c),
                y(v),
                x(c + 1),
                y(v)
            );
        }
        let _ = write!(
            s,
            r#"<path d="{}" fill="none" stroke="{}" stroke-width="1" opacity="0.85"/>"#,
            d.trim_end(),
            COLORS[i % COLORS.len()]
        );
    }
    // Legend with each policy's numbers.
    let mut ly = top + ph + 40.0;
    let _ = write!(
        s,
        r##"<rect x="{left}" y="{:.1}" width="14" height="10" fill="#bbb"/><text x="{}" y="{:.1}">demand (each column at its busiest minute, capacities at that minute)</text>"##,
        ly - 9.0,
        left + 20.0,
        ly
    );
    for (i, r) in runs.iter().enumerate() {
        ly += 18.0;
        let numbers = summaries
            .get(i)
            .map(|s| {
                format!(
                    " — cost {:.3}× limit, unserved {:.4}%",
                    s.cost_ratio,
                    s.unserved_fraction * 100.0
                )
            })
            .unwrap_or_default();
        let _ = write!(
            s,
            r#"<rect x="{left}" y="{:.1}" width="14" height="3" fill="{}"/><text x="{}" y="{:.1}">{} capacity{}</text>"#,
            ly - 5.0,
            COLORS[i % COLORS.len()],
            left + 20.0,
            ly,
            esc(&r.policy),
            esc(&numbers)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}
