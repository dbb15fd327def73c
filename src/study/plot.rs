//! SVG plots of a study, written by hand (a few dozen points do not need a plotting crate):
//!
//! - `pareto-<task>.svg`: the task's main metric against bits per weight, one colour per method,
//!   the Pareto front (no other cell is both smaller and better) drawn as a line.
//! - `calibration-<task>.svg`: the metric against calibration samples, one line per calibrated
//!   method and scheme (only when a study has calibrated cells).

use std::fmt::Write as _;

use super::report::{main_metric, task_label, tasks};
use super::CellResult;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
const MARGIN: f64 = 60.0;
const COLOURS: [(&str, &str); 5] = [
    ("baseline", "#444444"),
    ("rtn", "#1f77b4"),
    ("gptq", "#d62728"),
    ("awq", "#2ca02c"),
    ("smoothquant", "#9467bd"),
];

fn colour(method: &str) -> &'static str {
    COLOURS
        .iter()
        .find(|(m, _)| *m == method)
        .map_or("#ff7f0e", |(_, c)| c)
}

/// File name safe form of a task name.
fn slug(task: &str) -> String {
    task_label(task)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Axis range with a little padding; a single value gets a unit-wide range.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { (hi - lo) * 0.08 } else { 0.5 };
    (lo - pad, hi + pad)
}

/// A chart frame with axes, ticks and labels; `points` map data to pixels.
struct Chart {
    svg: String,
    x: (f64, f64),
    y: (f64, f64),
}

impl Chart {
    fn new(title: &str, x_label: &str, y_label: &str, x: (f64, f64), y: (f64, f64)) -> Self {
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
             font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
             <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{}</text>",
            WIDTH / 2.0,
            escape(title),
            WIDTH / 2.0,
            HEIGHT - 12.0,
            escape(x_label),
            HEIGHT / 2.0,
            HEIGHT / 2.0,
            escape(y_label)
        );
        let mut chart = Chart { svg, x, y };
        let (x0, y0, x1, y1) = (MARGIN, HEIGHT - MARGIN, WIDTH - MARGIN / 2.0, MARGIN / 1.5);
        let _ = writeln!(
            chart.svg,
            "<path d=\"M{x0} {y1} V{y0} H{x1}\" fill=\"none\" stroke=\"black\"/>"
        );
        for i in 0..=4 {
            let f = i as f64 / 4.0;
            let xv = x.0 + f * (x.1 - x.0);
            let yv = y.0 + f * (y.1 - y.0);
            let (px, py) = (chart.px(xv), chart.py(yv));
            let _ = writeln!(
                chart.svg,
                "<text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n\
                 <line x1=\"{x0}\" x2=\"{x1}\" y1=\"{py:.1}\" y2=\"{py:.1}\" stroke=\"#eeeeee\"/>",
                y0 + 16.0,
                tick(xv),
                x0 - 4.0,
                py + 4.0,
                tick(yv)
            );
        }
        chart
    }

    fn px(&self, v: f64) -> f64 {
        MARGIN + (v - self.x.0) / (self.x.1 - self.x.0) * (WIDTH - 1.5 * MARGIN)
    }

    fn py(&self, v: f64) -> f64 {
        HEIGHT - MARGIN - (v - self.y.0) / (self.y.1 - self.y.0) * (HEIGHT - MARGIN - MARGIN / 1.5)
    }

    fn point(&mut self, x: f64, y: f64, fill: &str, label: &str) {
        let (px, py) = (self.px(x), self.py(y));
        let _ = writeln!(
            self.svg,
            "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"4\" fill=\"{fill}\"><title>{}</title></circle>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" fill=\"{fill}\">{}</text>",
            escape(label),
            px + 6.0,
            py - 5.0,
            escape(label)
        );
    }

    fn line(&mut self, points: &[(f64, f64)], stroke: &str, dashed: bool) {
        if points.len() < 2 {
            return;
        }
        let d: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", self.px(x), self.py(y)))
            .collect();
        let _ =
            writeln!(
            self.svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{stroke}\" stroke-width=\"1.5\"{}/>",
            d.join(" "),
            if dashed { " stroke-dasharray=\"5 3\"" } else { "" }
        );
    }

    fn finish(mut self) -> String {
        self.svg += "</svg>\n";
        self.svg
    }
}

fn tick(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The cells on the Pareto front of (bits per weight: smaller is better, metric), sorted by
/// bits.
pub fn pareto_front(points: &[(f64, f64)], higher_is_better: bool) -> Vec<(f64, f64)> {
    let mut sorted: Vec<(f64, f64)> = points.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
    let mut front: Vec<(f64, f64)> = Vec::new();
    for p in sorted {
        let dominated = front.last().is_some_and(|last| {
            if higher_is_better {
                p.1 <= last.1
            } else {
                p.1 >= last.1
            }
        });
        if !dominated {
            front.push(p);
        }
    }
    front
}

/// Every plot of the study: `(file name, SVG text)`.
pub fn plots(results: &[CellResult]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in tasks(results) {
        let cells: Vec<(&CellResult, &'static str, f64, bool)> = results
            .iter()
            .filter_map(|r| main_metric(r, &task).map(|(n, v, h)| (r, n, v, h)))
            .collect();
        let Some(&(_, metric, _, higher)) = cells.first() else {
            continue;
        };
        let points: Vec<(f64, f64)> = cells.iter().map(|c| (c.0.bits_per_weight, c.2)).collect();
        let mut chart = Chart::new(
            &format!("{}: {metric} vs bits per weight", task_label(&task)),
            "bits per weight (decoder projections)",
            metric,
            range(points.iter().map(|p| p.0)),
            range(points.iter().map(|p| p.1)),
        );
        chart.line(&pareto_front(&points, higher), "#999999", true);
        for (r, _, v, _) in &cells {
            chart.point(
                r.bits_per_weight,
                *v,
                colour(&r.cell.method),
                &r.cell.label(),
            );
        }
        out.push((format!("pareto-{}.svg", slug(&task)), chart.finish()));

        let calibrated: Vec<_> = cells
            .iter()
            .filter(|c| c.0.cell.samples.is_some())
            .collect();
        if calibrated.is_empty() {
            continue;
        }
        let mut chart = Chart::new(
            &format!("{}: {metric} vs calibration samples", task_label(&task)),
            "calibration samples",
            metric,
            range(
                calibrated
                    .iter()
                    .map(|c| c.0.cell.samples.unwrap_or(0) as f64),
            ),
            range(calibrated.iter().map(|c| c.2)),
        );
        let mut series: Vec<(String, String)> = calibrated
            .iter()
            .map(|c| {
                (
                    c.0.cell.method.clone(),
                    c.0.cell.scheme.clone().unwrap_or_default(),
                )
            })
            .collect();
        series.dedup();
        for (method, scheme) in series {
            let mut line: Vec<(f64, f64)> = calibrated
                .iter()
                .filter(|c| {
                    c.0.cell.method == method && c.0.cell.scheme.as_deref() == Some(&scheme)
                })
                .map(|c| (c.0.cell.samples.unwrap_or(0) as f64, c.2))
                .collect();
            line.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart.line(&line, colour(&method), false);
            for &(x, y) in &line {
                chart.point(x, y, colour(&method), &format!("{method} {scheme}"));
            }
        }
        out.push((format!("calibration-{}.svg", slug(&task)), chart.finish()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pareto_front_keeps_only_undominated_points() {
        let pts = [
            (4.0, 0.5),
            (4.5, 0.45),
            (8.0, 0.6),
            (16.0, 0.6),
            (5.0, 0.55),
        ];
        assert_eq!(
            pareto_front(&pts, true),
            vec![(4.0, 0.5), (5.0, 0.55), (8.0, 0.6)]
        );
        let ppl = [(4.0, 9.0), (4.5, 9.5), (8.0, 6.2), (16.0, 6.1)];
        assert_eq!(
            pareto_front(&ppl, false),
            vec![(4.0, 9.0), (8.0, 6.2), (16.0, 6.1)]
        );
    }
}
