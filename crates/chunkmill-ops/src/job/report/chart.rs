//! The report's two charts, as inline SVG sharing one time axis: the memory chart (measured
//! peak RSS at each task's end, each task's projected memory over its run, the budget and the
//! baseline, in MB against seconds) and the timeline (one bar per task, one row per task
//! running at once). Both shade each stage's span, from its first task's start to its last
//! task's end.

use std::fmt::Write as _;

use super::plan_view::PlanView;
use super::{escape, stage_color, TaskRecord};
use crate::job::human;

/// Width of both charts, pixels; the plot area leaves room for the y axis on the left.
const WIDTH: f64 = 960.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 20.0;
const MB: f64 = 1e6;

/// A linear map from values to pixels.
#[derive(Clone, Copy, Debug)]
struct Scale {
    lo: f64,
    hi: f64,
    px_lo: f64,
    px_hi: f64,
}

impl Scale {
    fn at(&self, v: f64) -> f64 {
        let span = (self.hi - self.lo).max(f64::MIN_POSITIVE);
        self.px_lo + (v - self.lo) / span * (self.px_hi - self.px_lo)
    }
}

/// A round step (1, 2 or 5 × 10^k) that cuts `span` into about `target` parts.
fn nice_step(span: f64, target: f64) -> f64 {
    if !(span > 0.0 && span.is_finite()) {
        return 1.0;
    }
    let raw = span / target;
    let magnitude = 10f64.powf(raw.log10().floor());
    let unit = raw / magnitude;
    let nice = if unit <= 1.0 {
        1.0
    } else if unit <= 2.0 {
        2.0
    } else if unit <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Ticks from 0 to at least `max`, a round step apart, with the decimals their labels need.
fn ticks(max: f64, target: f64) -> (Vec<f64>, usize) {
    let step = nice_step(max, target);
    // A hair under: 0.03 / 0.01 is 3.0000000000000004 in floating point.
    let count = (max / step - 1e-9).ceil().max(1.0) as usize;
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    // Rounded to the shown decimals, so that 3 × 0.2 is 0.6 in the labels' data too.
    let unit = 10f64.powi(decimals as i32);
    let values = (0..=count)
        .map(|i| (i as f64 * step * unit).round() / unit)
        .collect();
    (values, decimals)
}

/// Seconds since the first task's start: the x axis both charts share.
pub(super) struct TimeAxis {
    t0_ms: f64,
    scale: Scale,
    ticks: Vec<f64>,
    decimals: usize,
}

impl TimeAxis {
    /// The axis over `records`, or none when no task ran.
    pub(super) fn of(records: &[TaskRecord]) -> Option<Self> {
        let t0_ms = records
            .iter()
            .map(|r| r.started_ms)
            .min_by(f64::total_cmp)?;
        let end = records
            .iter()
            .map(|r| (r.started_ms - t0_ms) / 1000.0 + r.seconds)
            .fold(0.0, f64::max);
        let (ticks, decimals) = ticks(end.max(1e-3), 8.0);
        let hi = ticks.last().copied().unwrap_or(1.0);
        Some(Self {
            t0_ms,
            scale: Scale {
                lo: 0.0,
                hi,
                px_lo: LEFT,
                px_hi: WIDTH - RIGHT,
            },
            ticks,
            decimals,
        })
    }

    fn start(&self, r: &TaskRecord) -> f64 {
        (r.started_ms - self.t0_ms) / 1000.0
    }

    fn x(&self, seconds: f64) -> f64 {
        self.scale.at(seconds)
    }

    /// The x axis at `y`: the baseline, ticks with their values in seconds, a title.
    fn draw(&self, y: f64, top: f64) -> String {
        let mut out = format!(
            "<g class=\"x-axis\"><line x1=\"{LEFT}\" x2=\"{r}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#555\"/>",
            r = WIDTH - RIGHT
        );
        for &t in &self.ticks {
            let x = self.x(t);
            let _ = write!(
                out,
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top}\" y2=\"{y}\" stroke=\"#e3e3e3\"/>\
                 <line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{y}\" y2=\"{y5}\" stroke=\"#555\"/>\
                 <text class=\"tick\" data-seconds=\"{t}\" x=\"{x:.1}\" y=\"{y18}\" text-anchor=\"middle\">{label}</text>",
                y5 = y + 5.0,
                y18 = y + 18.0,
                label = format_args!("{t:.*}", self.decimals),
            );
        }
        let _ = write!(
            out,
            "<text class=\"axis-title\" x=\"{cx}\" y=\"{ty}\" text-anchor=\"middle\">seconds since the first task started</text></g>",
            cx = (LEFT + WIDTH - RIGHT) / 2.0,
            ty = y + 36.0,
        );
        out
    }
}

/// Each stage's span: from its first task's start to its last task's end, seconds.
fn stage_spans(records: &[TaskRecord], time: &TimeAxis, stages: usize) -> Vec<Option<(f64, f64)>> {
    let mut spans = vec![None; stages];
    for r in records {
        let (s, e) = (time.start(r), time.start(r) + r.seconds);
        if let Some(slot) = spans.get_mut(r.stage) {
            *slot = Some(match *slot {
                Some((a, b)) => (f64::min(a, s), f64::max(b, e)),
                None => (s, e),
            });
        }
    }
    spans
}

/// The stages' spans (first task start to last task end, from `records`) shaded behind a plot
/// from `top` to `bottom`, each named at its top when the name fits.
fn draw_spans(
    view: &PlanView,
    records: &[TaskRecord],
    time: &TimeAxis,
    top: f64,
    bottom: f64,
) -> String {
    let mut out = String::from("<g class=\"spans\">");
    for (i, span) in stage_spans(records, time, view.stages.len())
        .iter()
        .enumerate()
    {
        let Some((s, e)) = *span else { continue };
        let name = view.stages.get(i).map_or("", |st| st.name.as_str());
        let (x0, x1) = (time.x(s), time.x(e));
        let width = (x1 - x0).max(1.0);
        let _ = write!(
            out,
            "<rect class=\"span\" data-stage=\"{n}\" data-start=\"{s:.3}\" data-end=\"{e:.3}\" x=\"{x0:.1}\" y=\"{top}\" width=\"{width:.1}\" height=\"{h}\" fill=\"{c}\" fill-opacity=\"0.10\" stroke=\"{c}\" stroke-opacity=\"0.35\" stroke-dasharray=\"3 3\"><title>stage {n}: {s:.2} s – {e:.2} s</title></rect>",
            n = escape(name),
            h = bottom - top,
            c = stage_color(i),
        );
        // About 6.5 px a character at the chart's font size.
        if name.chars().count() as f64 * 6.5 + 8.0 < width {
            let _ = write!(
                out,
                "<text class=\"span-name\" x=\"{x:.1}\" y=\"{y}\" fill=\"{c}\">{n}</text>",
                x = x0 + 4.0,
                y = top + 13.0,
                c = stage_color(i),
                n = escape(name),
            );
        }
    }
    out.push_str("</g>");
    out
}

const CHART_STYLE: &str = "font-family:system-ui,sans-serif;font-size:12px";

/// The opening `<svg>` tag of a chart `height` px tall.
fn open_chart(class: &str, label: &str, height: f64) -> String {
    format!(
        "<svg class=\"chart {class}\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" height=\"{height}\" style=\"{CHART_STYLE}\" role=\"img\" aria-label=\"{label}\">"
    )
}

/// Memory, MB, against time: the budget and baseline as labelled lines, each task's projected
/// memory as a thick bar over its run, and the process's peak RSS when each task ended as a dot.
pub(super) fn memory_chart(view: &PlanView, records: &[TaskRecord], time: &TimeAxis) -> String {
    let (top, bottom) = (24.0, 284.0);
    let height = bottom + 44.0;
    let highest = records
        .iter()
        .flat_map(|r| [r.peak_rss, r.projected + view.baseline_mem.unwrap_or(0)])
        .chain([view.max_mem, view.baseline_mem.unwrap_or(0)])
        .max()
        .unwrap_or(0) as f64;
    let (y_ticks, decimals) = ticks((highest * 1.05 / MB).max(1e-3), 5.0);
    let y = Scale {
        lo: 0.0,
        hi: y_ticks.last().copied().unwrap_or(1.0),
        px_lo: bottom,
        px_hi: top,
    };
    let mut out = open_chart("memory", "memory over time", height);
    out.push_str(&draw_spans(view, records, time, top, bottom));
    out.push_str("<g class=\"y-axis\">");
    for &mb in &y_ticks {
        let py = y.at(mb);
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{r}\" y1=\"{py:.1}\" y2=\"{py:.1}\" stroke=\"#e3e3e3\"/>\
             <text class=\"tick\" data-mb=\"{mb}\" x=\"{lx}\" y=\"{ty:.1}\" text-anchor=\"end\">{label}</text>",
            r = WIDTH - RIGHT,
            lx = LEFT - 8.0,
            ty = py + 4.0,
            label = format_args!("{mb:.*}", decimals),
        );
    }
    let _ = write!(
        out,
        "<line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{top}\" y2=\"{bottom}\" stroke=\"#555\"/>\
         <text class=\"axis-title\" transform=\"translate(16 {cy}) rotate(-90)\" text-anchor=\"middle\">memory (MB)</text></g>",
        cy = (top + bottom) / 2.0
    );
    out.push_str(&time.draw(bottom, top));
    if let Some(base) = view.baseline_mem {
        out.push_str(&level_line(
            "baseline",
            base,
            &y,
            "#777",
            "2 4",
            "baseline before any task",
            false,
        ));
    }
    // A projection is what one task adds to the process: drawn on top of the baseline, it
    // is comparable with the measured RSS instead of lying flat on the axis.
    let base = view.baseline_mem.unwrap_or(0);
    for r in records {
        let x0 = time.x(time.start(r));
        let x1 = time.x(time.start(r) + r.seconds).max(x0 + 3.0);
        let level = base + r.projected;
        let py = y.at(level as f64 / MB);
        let _ = write!(
            out,
            "<line class=\"projected\" data-stage=\"{s}\" data-task=\"{t}\" data-bytes=\"{b}\" data-level=\"{level}\" x1=\"{x0:.1}\" x2=\"{x1:.1}\" y1=\"{py:.1}\" y2=\"{py:.1}\" stroke=\"{c}\" stroke-width=\"6\" stroke-opacity=\"0.8\"><title>stage {n} task {t}: projected {h} over the baseline ({hl})</title></line>",
            s = r.stage,
            t = r.task,
            b = r.projected,
            c = stage_color(r.stage),
            n = stage_name(view, r.stage),
            h = human(r.projected),
            hl = human(level),
        );
    }
    out.push_str(&level_line(
        "budget",
        view.max_mem,
        &y,
        "#d62728",
        "7 4",
        "budget (--max-mem)",
        true,
    ));
    for r in records {
        let _ = write!(
            out,
            "<circle class=\"rss\" data-stage=\"{s}\" data-task=\"{t}\" data-bytes=\"{b}\" cx=\"{x:.1}\" cy=\"{py:.1}\" r=\"4\" fill=\"{c}\" stroke=\"#fff\" stroke-width=\"1\"><title>stage {n} task {t}: peak RSS {h} when it ended at {e:.2} s ({sec:.3} s, {a} attempt(s))</title></circle>",
            s = r.stage,
            t = r.task,
            b = r.peak_rss,
            x = time.x(time.start(r) + r.seconds),
            py = y.at(r.peak_rss as f64 / MB),
            c = stage_color(r.stage),
            n = stage_name(view, r.stage),
            h = human(r.peak_rss),
            e = time.start(r) + r.seconds,
            sec = r.seconds,
            a = r.attempts,
        );
    }
    out.push_str("</svg>");
    out
}

fn stage_name(view: &PlanView, stage: usize) -> String {
    view.stages
        .get(stage)
        .map_or_else(|| stage.to_string(), |s| escape(&s.name))
}

/// A horizontal line at `bytes` across the plot, labelled with its name and value at its
/// right end, above the line (`above`) or below it.
fn level_line(
    class: &str,
    bytes: u64,
    y: &Scale,
    color: &str,
    dash: &str,
    name: &str,
    above: bool,
) -> String {
    let py = y.at(bytes as f64 / MB);
    format!(
        "<g class=\"{class}\" data-bytes=\"{bytes}\"><line x1=\"{LEFT}\" x2=\"{r}\" y1=\"{py:.1}\" y2=\"{py:.1}\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"{dash}\"/>\
         <text x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\" fill=\"{color}\"{weight}>{name} {h}</text></g>",
        r = WIDTH - RIGHT,
        tx = WIDTH - RIGHT - 4.0,
        ty = if above { py - 5.0 } else { py + 14.0 },
        weight = if above { " font-weight=\"600\"" } else { "" },
        h = human(bytes),
    )
}

/// One bar per task from its start to its end, in its stage's colour; a task goes to the
/// first row free when it starts, so the rows in use show how many ran at once.
pub(super) fn timeline_chart(view: &PlanView, records: &[TaskRecord], time: &TimeAxis) -> String {
    let mut sorted: Vec<&TaskRecord> = records.iter().collect();
    sorted.sort_by(|a, b| a.started_ms.total_cmp(&b.started_ms));
    let mut lanes: Vec<f64> = Vec::new();
    let mut placed = Vec::with_capacity(sorted.len());
    for r in &sorted {
        let (start, end) = (time.start(r), time.start(r) + r.seconds);
        // Half a millisecond of slack: a task started as another ended shares its row.
        let lane = lanes
            .iter()
            .position(|&free| free <= start + 5e-4)
            .unwrap_or_else(|| {
                lanes.push(0.0);
                lanes.len() - 1
            });
        lanes[lane] = end;
        placed.push((lane, *r));
    }
    let rows = lanes.len().max(1);
    let row = (220.0 / rows as f64).clamp(3.0, 16.0);
    let top = 24.0;
    // Tall enough for the axis title however few rows.
    let bottom = top + (row * rows as f64 + 4.0).max(90.0);
    let height = bottom + 44.0;
    let mut out = open_chart("timeline", "tasks over time", height);
    out.push_str(&draw_spans(view, records, time, top, bottom));
    let _ = write!(
        out,
        "<line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{top}\" y2=\"{bottom}\" stroke=\"#555\"/>\
         <text class=\"axis-title\" transform=\"translate(16 {cy}) rotate(-90)\" text-anchor=\"middle\">tasks at once</text>\
         <text class=\"tick\" data-rows=\"{rows}\" x=\"{lx}\" y=\"{ty:.1}\" text-anchor=\"end\">{rows}</text>",
        cy = (top + bottom) / 2.0,
        lx = LEFT - 8.0,
        ty = top + 10.0,
    );
    out.push_str(&time.draw(bottom, top));
    for (lane, r) in placed {
        let x0 = time.x(time.start(r));
        let width = (time.x(time.start(r) + r.seconds) - x0).max(1.0);
        let _ = write!(
            out,
            "<rect class=\"task\" data-stage=\"{s}\" data-task=\"{t}\" data-seconds=\"{sec}\" x=\"{x0:.1}\" y=\"{py:.1}\" width=\"{width:.1}\" height=\"{h:.1}\" fill=\"{c}\"><title>stage {n} task {t}: {sec:.3} s from {st:.2} s, {a} attempt(s), peak RSS {p}, projected {pr}</title></rect>",
            s = r.stage,
            t = r.task,
            sec = r.seconds,
            py = top + 2.0 + lane as f64 * row,
            h = (row - 1.0).max(2.0),
            c = stage_color(r.stage),
            n = stage_name(view, r.stage),
            st = time.start(r),
            a = r.attempts,
            p = human(r.peak_rss),
            pr = human(r.projected),
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            ticks(480.0, 5.0),
            (vec![0.0, 100.0, 200.0, 300.0, 400.0, 500.0], 0)
        );
        assert_eq!(ticks(0.9, 8.0), (vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0], 1));
        assert_eq!(ticks(0.03, 5.0), (vec![0.0, 0.01, 0.02, 0.03], 2));
        assert_eq!(ticks(7.0, 8.0).0.last(), Some(&7.0));
        assert_eq!(ticks(0.0, 5.0).0, vec![0.0, 1.0]);
    }

    #[test]
    fn scale_maps_ends_to_pixels() {
        let s = Scale {
            lo: 0.0,
            hi: 500.0,
            px_lo: 284.0,
            px_hi: 24.0,
        };
        assert_eq!(s.at(0.0), 284.0);
        assert_eq!(s.at(500.0), 24.0);
        assert_eq!(s.at(250.0), 154.0);
    }
}
