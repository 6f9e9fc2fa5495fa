//! `--report FILE.html`: one self-contained page anyone can open — the plan, a timeline of every
//! task, and each task's measured peak memory against its projection and the budget.

use std::fmt::Write as _;

use chunkmill_plan::Plan;
use serde_json::Value;

use super::human;

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

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COLORS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
];

/// The page.
#[must_use]
pub fn html(
    plan: &Plan,
    title: &str,
    records: &[TaskRecord],
    wall_seconds: f64,
    peak_rss: u64,
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>chunkmill report: {t}</title>\
         <style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#eee}}\
         td:first-child,th:first-child{{text-align:left}}svg{{border:1px solid #ddd;background:#fafafa}}</style></head><body>\
         <h1>chunkmill: {t}</h1><p>plan <code>{id}</code>, {n} tasks in {s} stages, {w:.2} s wall; \
         budget {b}, measured peak RSS {p}, largest projected task {m}.</p>",
        t = escape(title),
        id = escape(&plan.plan_id),
        n = plan.total_tasks(),
        s = plan.stages.len(),
        w = wall_seconds,
        b = human(plan.max_mem),
        p = human(peak_rss),
        m = human(plan.max_projected_mem()),
    );
    out.push_str("<h2>Plan</h2><table><tr><th>stage</th><th>what</th><th>tasks</th><th>projected per task</th><th>read</th><th>written</th><th>task seconds (median / max)</th></tr>");
    for (i, stage) in plan.stages.iter().enumerate() {
        let mut secs: Vec<f64> = records
            .iter()
            .filter(|r| r.stage == i)
            .map(|r| r.seconds)
            .collect();
        secs.sort_by(f64::total_cmp);
        let (median, max) = if secs.is_empty() {
            (0.0, 0.0)
        } else {
            (secs[secs.len() / 2], secs[secs.len() - 1])
        };
        let _ = write!(
            out,
            "<tr><td><span style=\"color:{c}\">&#9632;</span> {name}</td><td>{label}</td><td>{tasks}</td><td>{proj}</td><td>{r}</td><td>{wr}</td><td>{median:.3} / {max:.3}</td></tr>",
            c = COLORS[i % COLORS.len()],
            name = escape(&stage.name),
            label = escape(&stage.label),
            tasks = stage.tasks(),
            proj = human(stage.projected_mem),
            r = human(stage.bytes_read),
            wr = human(stage.bytes_written),
        );
    }
    out.push_str("</table>");

    // Timeline: one row per lane; a task goes to the first lane free at its start.
    let t0 = records
        .iter()
        .map(|r| r.started_ms)
        .fold(f64::INFINITY, f64::min);
    let t1 = records
        .iter()
        .map(|r| r.started_ms + r.seconds * 1000.0)
        .fold(0.0, f64::max);
    let span = (t1 - t0).max(1.0);
    let mut sorted: Vec<&TaskRecord> = records.iter().collect();
    sorted.sort_by(|a, b| a.started_ms.total_cmp(&b.started_ms));
    let mut lanes: Vec<f64> = Vec::new();
    let mut bars = String::new();
    let width = 1000.0;
    for r in &sorted {
        let end = r.started_ms + r.seconds * 1000.0;
        let lane = lanes
            .iter()
            .position(|&free| free <= r.started_ms + 0.5)
            .unwrap_or_else(|| {
                lanes.push(0.0);
                lanes.len() - 1
            });
        lanes[lane] = end;
        let x = (r.started_ms - t0) / span * width;
        let w = (r.seconds * 1000.0 / span * width).max(1.0);
        let _ = write!(
            bars,
            "<rect x=\"{x:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"14\" fill=\"{c}\"><title>stage {s} task {t}: {sec:.3} s, {a} attempt(s), peak RSS {p}, projected {pr}</title></rect>",
            y = lane * 16,
            c = COLORS[r.stage % COLORS.len()],
            s = r.stage,
            t = r.task,
            sec = r.seconds,
            a = r.attempts,
            p = human(r.peak_rss),
            pr = human(r.projected),
        );
    }
    let _ = write!(
        out,
        "<h2>Timeline</h2><p>{:.2} s from the first task's start to the last one's end; one row per task running at once (hover a bar).</p><svg width=\"{width}\" height=\"{}\">{bars}</svg>",
        span / 1000.0,
        lanes.len().max(1) * 16
    );

    // Memory: the process's peak RSS when each task ended, against the task's projection and the budget.
    let max_y = plan
        .max_mem
        .max(records.iter().map(|r| r.peak_rss).max().unwrap_or(0))
        .max(1) as f64;
    let height = 200.0;
    let mut dots = String::new();
    for r in &sorted {
        let x = (r.started_ms + r.seconds * 1000.0 - t0) / span * width;
        let _ = write!(
            dots,
            "<circle cx=\"{x:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{}\"><title>stage {} task {}: peak RSS {}</title></circle><rect x=\"{x:.1}\" y=\"{:.1}\" width=\"2\" height=\"2\" fill=\"#999\"><title>projected {}</title></rect>",
            height - r.peak_rss as f64 / max_y * height,
            COLORS[r.stage % COLORS.len()],
            r.stage,
            r.task,
            human(r.peak_rss),
            height - r.projected as f64 / max_y * height,
            human(r.projected),
        );
    }
    let budget_y = height - plan.max_mem as f64 / max_y * height;
    let _ = write!(
        out,
        "<h2>Memory</h2><p>Dots: the process's peak resident memory when each task ended; grey: the task's projected memory; red line: the budget ({}).</p>\
         <svg width=\"{width}\" height=\"{height}\"><line x1=\"0\" x2=\"{width}\" y1=\"{budget_y:.1}\" y2=\"{budget_y:.1}\" stroke=\"#d33\"/>{dots}</svg></body></html>",
        human(plan.max_mem)
    );
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
