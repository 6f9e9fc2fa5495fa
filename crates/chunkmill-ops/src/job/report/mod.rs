//! `--report FILE.html`: one self-contained page anyone can open (inline SVG and CSS, no
//! script, nothing fetched) — the plan, each task's measured peak memory against its
//! projection and the budget over time, a timeline of every task, and each stage's tasks.
//! The plan part is the same fragment the Python package shows in notebooks ([`plan_html`]).

mod chart;
mod plan_view;

use std::fmt::Write as _;

use serde_json::Value;

pub use plan_view::{plan_html, PlanView, StageView};

/// Refuses, before the job runs, a local output file (`--report`, virtualize's `--output`)
/// that could only fail once the work is done: its directory does not exist, or the path is
/// an existing directory where a file is wanted (`want_dir` false).
///
/// # Errors
/// [`OpsError::Refused`] naming the flag, the path and what is wrong.
pub fn check_output_path(
    flag: &str,
    path: &std::path::Path,
    want_dir: bool,
) -> Result<(), crate::OpsError> {
    let refused = |why: &str| {
        Err(crate::OpsError::Refused(format!(
            "{flag} {}: {why}",
            path.display()
        )))
    };
    if !want_dir && path.is_dir() {
        return refused("is a directory; give a file name");
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if !parent.is_dir() {
        return refused(&format!(
            "the directory {} does not exist; create it first",
            parent.display()
        ));
    }
    Ok(())
}

/// One finished task, as its marker recorded it.
#[derive(Clone, Debug)]
pub struct TaskRecord {
    /// Stage index in the plan.
    pub stage: usize,
    /// Task index in the stage.
    pub task: u64,
    /// Start, milliseconds since the Unix epoch.
    pub started_ms: f64,
    /// Duration, seconds.
    pub seconds: f64,
    /// Attempts it took.
    pub attempts: u64,
    /// Peak resident memory of its process when it finished, bytes.
    pub peak_rss: u64,
    /// Its projected memory, bytes.
    pub projected: u64,
}

impl TaskRecord {
    /// A record from a marker's JSON.
    #[must_use]
    pub fn from_marker(stage: usize, task: u64, v: &Value) -> Self {
        let num = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        Self {
            stage,
            task,
            started_ms: num("started_ms"),
            seconds: num("seconds"),
            attempts: num("attempts") as u64,
            peak_rss: num("peak_rss") as u64,
            projected: num("projected_mem") as u64,
        }
    }
}

/// `text` safe inside HTML text and attribute values.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const COLORS: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948", "#9c755f",
];

/// The colour of stage `i` in every table and chart.
fn stage_color(i: usize) -> &'static str {
    COLORS[i % COLORS.len()]
}

const PAGE_STYLE: &str = "\
body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222;max-width:1000px}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}\
table.run{border-collapse:collapse;font-size:13px}\
table.run td,table.run th{border-bottom:1px solid #ddd;padding:3px 10px;text-align:right}\
table.run th{background:#f2f2f2}table.run td.text,table.run th.text{text-align:left}\
svg.chart{display:block;max-width:100%;height:auto;background:#fff}\
svg.chart .tick{fill:#444}svg.chart .axis-title{fill:#222;font-weight:600}\
.legend{display:flex;flex-wrap:wrap;gap:4px 18px;font-size:13px;margin:.3em 0 0 72px}\
.legend span{white-space:nowrap}.legend svg{vertical-align:middle;margin-right:5px}\
.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.4em;vertical-align:-1px;border-radius:2px}";

/// The whole page: what ran, the plan ([`plan_html`]), the memory chart and its legend, the
/// timeline, and each stage's tasks as they ran.
#[must_use]
pub fn html(
    view: &PlanView,
    title: &str,
    records: &[TaskRecord],
    wall_seconds: f64,
    peak_rss: u64,
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>chunkmill report: {t}</title>\
         <style>{PAGE_STYLE}</style></head><body><h1>chunkmill: {t}</h1>\
         <p class=\"run-summary\"><span class=\"tasks-run\" data-value=\"{n}\">{n}</span> task(s) ran in \
         <span class=\"wall\" data-seconds=\"{w}\">{w:.2} s</span>; peak resident memory of any one process of the run (this one, or a worker) {p}, \
         against a budget of {b}.</p><h2>Plan</h2>{plan}",
        t = escape(title),
        n = records.len(),
        w = wall_seconds,
        p = plan_view::bytes_span("peak-rss", peak_rss),
        b = plan_view::bytes_span("budget", view.max_mem),
        plan = plan_html(view),
    );
    let Some(time) = chart::TimeAxis::of(records) else {
        out.push_str(
            "<p class=\"no-tasks\">No task ran in this run: nothing to chart.</p></body></html>",
        );
        return out;
    };
    let _ = write!(
        out,
        "<h2>Memory</h2>{chart}{legend}<h2>Timeline</h2><p>One bar per task, one row per task running at once; \
         shaded: each stage from its first task's start to its last task's end (hover for details).</p>{timeline}\
         <h2>Tasks, per stage</h2>{table}</body></html>",
        chart = chart::memory_chart(view, records, &time),
        legend = legend(view, records),
        timeline = chart::timeline_chart(view, records, &time),
        table = run_table(view, records),
    );
    out
}

/// What each mark of the memory chart means, then the stages' colours.
fn legend(view: &PlanView, records: &[TaskRecord]) -> String {
    let projected = if view.baseline_mem.is_some() {
        "baseline + a task's projected memory"
    } else {
        "a task's projected memory"
    };
    let mut out = format!(
        "<div class=\"legend\">\
         <span><svg width=\"14\" height=\"14\"><circle cx=\"7\" cy=\"7\" r=\"4\" fill=\"#555\"/></svg>peak RSS of the process when a task ended</span>\
         <span><svg width=\"22\" height=\"14\"><line x1=\"1\" x2=\"21\" y1=\"7\" y2=\"7\" stroke=\"#555\" stroke-width=\"6\" stroke-opacity=\"0.8\"/></svg>{projected}, over its run</span>\
         <span><svg width=\"26\" height=\"14\"><line x1=\"1\" x2=\"25\" y1=\"7\" y2=\"7\" stroke=\"#d62728\" stroke-width=\"2\" stroke-dasharray=\"7 4\"/></svg>budget (--max-mem)</span>",
    );
    if view.baseline_mem.is_some() {
        out.push_str("<span><svg width=\"26\" height=\"14\"><line x1=\"1\" x2=\"25\" y1=\"7\" y2=\"7\" stroke=\"#777\" stroke-width=\"2\" stroke-dasharray=\"2 4\"/></svg>baseline: the process before any task</span>");
    }
    for (i, stage) in view.stages.iter().enumerate() {
        let ran = records.iter().filter(|r| r.stage == i).count();
        let _ = write!(
            out,
            "<span><span class=\"swatch\" style=\"background:{c}\"></span>stage {n} ({ran} task(s))</span>",
            c = stage_color(i),
            n = escape(&stage.name),
        );
    }
    out.push_str("</div>");
    out
}

/// Per stage, the tasks of this run: how many, when, how long, retried, and the highest peak
/// RSS any of them saw.
fn run_table(view: &PlanView, records: &[TaskRecord]) -> String {
    let mut out = String::from(
        "<table class=\"run\"><thead><tr><th class=\"text\">stage</th><th>tasks run</th><th>from s</th><th>to s</th>\
         <th>task s (median)</th><th>task s (max)</th><th>attempts (max)</th><th>peak RSS (max)</th></tr></thead><tbody>",
    );
    let t0 = records
        .iter()
        .map(|r| r.started_ms)
        .fold(f64::INFINITY, f64::min);
    for (i, stage) in view.stages.iter().enumerate() {
        let mine: Vec<&TaskRecord> = records.iter().filter(|r| r.stage == i).collect();
        if mine.is_empty() {
            continue;
        }
        let mut secs: Vec<f64> = mine.iter().map(|r| r.seconds).collect();
        secs.sort_by(f64::total_cmp);
        let from = mine
            .iter()
            .map(|r| (r.started_ms - t0) / 1000.0)
            .fold(f64::INFINITY, f64::min);
        let to = mine
            .iter()
            .map(|r| (r.started_ms - t0) / 1000.0 + r.seconds)
            .fold(0.0, f64::max);
        let _ = write!(
            out,
            "<tr data-stage=\"{n}\"><td class=\"text\"><span class=\"swatch\" style=\"background:{c}\"></span>{n}</td>\
             <td class=\"tasks-run\" data-value=\"{count}\">{count}</td><td>{from:.2}</td><td>{to:.2}</td>\
             <td>{median:.3}</td><td>{max:.3}</td><td>{attempts}</td>{rss}</tr>",
            n = escape(&stage.name),
            c = stage_color(i),
            count = mine.len(),
            median = secs[secs.len() / 2],
            max = secs[secs.len() - 1],
            attempts = mine.iter().map(|r| r.attempts).max().unwrap_or(0),
            rss = plan_view::bytes_cell("peak-rss", mine.iter().map(|r| r.peak_rss).max().unwrap_or(0)),
        );
    }
    out.push_str("</tbody></table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_path_in_a_missing_directory_or_a_directory_is_refused(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let missing = dir.path().join("nope").join("r.html");
        let err = check_output_path("--report", &missing, false).err();
        assert!(matches!(&err, Some(crate::OpsError::Refused(m)) if m.contains("does not exist")));
        let err = check_output_path("--report", dir.path(), false).err();
        assert!(matches!(&err, Some(crate::OpsError::Refused(m)) if m.contains("is a directory")));
        check_output_path("--report", &dir.path().join("r.html"), false)?;
        check_output_path("--output", dir.path(), true)?;
        Ok(())
    }
}
