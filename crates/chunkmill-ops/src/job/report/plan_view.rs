//! The plan as a person reads it in HTML: one fragment, shown by the `--report` page and by
//! the Python package's notebook view (`chunkmill._html.plan_html`, through the extension
//! module), so both show the same numbers in the same layout.

use std::fmt::Write as _;

use chunkmill_plan::Plan;
use serde::{Deserialize, Serialize};

use super::{escape, stage_color};
use crate::job::human;

/// What the views show of a plan: the fields of `chunkmill plan … --json` they read (other
/// fields are ignored, so any job's plan JSON will do).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanView {
    /// The plan id.
    pub plan_id: String,
    /// The job (`rechunk`, `convert`, `compute`), when known.
    #[serde(default)]
    pub job: Option<String>,
    /// The memory budget of one worker process (`--max-mem`), bytes.
    pub max_mem: u64,
    /// The part of the budget the tasks running at once may hold, bytes.
    #[serde(default)]
    pub task_budget: Option<u64>,
    /// The process's memory before any task, bytes.
    #[serde(default)]
    pub baseline_mem: Option<u64>,
    /// Bytes written to intermediates (read back by a later stage).
    #[serde(default)]
    pub bytes_intermediate: Option<u64>,
    /// The stages, in the order they run.
    pub stages: Vec<StageView>,
}

/// One stage of a [`PlanView`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageView {
    /// Its name (markers live under it).
    pub name: String,
    /// What it does.
    pub label: String,
    /// Number of tasks.
    pub tasks: u64,
    /// Bytes one task holds at its peak.
    pub projected_mem: u64,
    /// Decoded bytes the stage reads.
    pub bytes_read: u64,
    /// Decoded bytes the stage writes.
    pub bytes_written: u64,
}

impl PlanView {
    /// The view of a plan, with what the job knows beside it.
    #[must_use]
    pub fn of_plan(plan: &Plan, task_budget: Option<u64>, baseline_mem: Option<u64>) -> Self {
        Self {
            plan_id: plan.plan_id.clone(),
            job: Some(plan.job.clone()),
            max_mem: plan.max_mem,
            task_budget,
            baseline_mem,
            bytes_intermediate: None,
            stages: plan
                .stages
                .iter()
                .map(|s| StageView {
                    name: s.name.clone(),
                    label: s.label.clone(),
                    tasks: s.tasks(),
                    projected_mem: s.projected_mem,
                    bytes_read: s.bytes_read,
                    bytes_written: s.bytes_written,
                })
                .collect(),
        }
    }

    /// The view of a plan's JSON (`chunkmill plan rechunk … --json`, or a `Plan`).
    ///
    /// # Errors
    /// [`crate::OpsError::Usage`] naming the field that is missing or of the wrong type.
    pub fn from_json(text: &str) -> Result<Self, crate::OpsError> {
        serde_json::from_str(text)
            .map_err(|e| crate::OpsError::Usage(format!("not a chunkmill plan: {e}")))
    }

    fn total_tasks(&self) -> u64 {
        self.stages.iter().map(|s| s.tasks).sum()
    }

    fn largest_task(&self) -> u64 {
        self.stages
            .iter()
            .map(|s| s.projected_mem)
            .max()
            .unwrap_or(0)
    }
}

/// The style of the plan fragment, scoped by its class so a notebook's page is untouched.
pub(super) const PLAN_STYLE: &str = "\
.chunkmill-plan{font-family:system-ui,sans-serif;font-size:13px;color:#222;line-height:1.4}\
.chunkmill-plan table{border-collapse:collapse;margin:.4em 0}\
.chunkmill-plan th,.chunkmill-plan td{border-bottom:1px solid #ddd;padding:3px 10px;text-align:right;white-space:nowrap}\
.chunkmill-plan th{background:#f2f2f2;font-weight:600}\
.chunkmill-plan td.text,.chunkmill-plan th.text{text-align:left;white-space:normal}\
.chunkmill-plan .swatch{display:inline-block;width:.8em;height:.8em;margin-right:.4em;vertical-align:-1px;border-radius:2px}\
.chunkmill-plan .over{color:#c0392b;font-weight:600}\
.chunkmill-plan svg.bar{vertical-align:middle;margin-right:.4em}\
.chunkmill-plan .note{color:#666;font-size:12px;margin:.2em 0}";

/// The plan as an HTML fragment (a `<div>` with its own scoped style): a one-line summary
/// and a table of the stages, each with its tasks, its projected memory per task drawn
/// against the budget, and the bytes it reads and writes. Every text from the plan is
/// escaped; each number carries its exact value in a `data-` attribute.
#[must_use]
pub fn plan_html(view: &PlanView) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<div class=\"chunkmill-plan\" data-plan-id=\"{id}\"><style>{PLAN_STYLE}</style>",
        id = escape(&view.plan_id)
    );
    out.push_str(&summary(view));
    out.push_str(
        "<table class=\"stages\"><thead><tr><th class=\"text\">stage</th><th class=\"text\">what</th>\
         <th>tasks</th><th>projected per task</th><th class=\"text\">of the budget</th>\
         <th>read</th><th>written</th></tr></thead><tbody>",
    );
    for (i, stage) in view.stages.iter().enumerate() {
        let _ = write!(
            out,
            "<tr class=\"stage\" data-stage=\"{name}\"><td class=\"text\"><span class=\"swatch\" style=\"background:{color}\"></span>{name}</td>\
             <td class=\"text\">{label}</td><td class=\"tasks\" data-value=\"{tasks}\">{tasks}</td>{proj}\
             <td class=\"text\">{bar}</td>{read}{written}</tr>",
            name = escape(&stage.name),
            color = stage_color(i),
            label = escape(&stage.label),
            tasks = stage.tasks,
            proj = bytes_cell("projected", stage.projected_mem),
            bar = budget_bar(stage.projected_mem, view, stage_color(i)),
            read = bytes_cell("read", stage.bytes_read),
            written = bytes_cell("written", stage.bytes_written),
        );
    }
    out.push_str(
        "</tbody></table><p class=\"note\">Bar: the budget (--max-mem); filled: what one task \
         is projected to hold",
    );
    if view.task_budget.is_some() {
        out.push_str("; tick: what the tasks running at once may hold together");
    }
    out.push_str(".</p></div>");
    out
}

/// A table cell showing `bytes` as a person reads it, its exact value in `data-bytes`.
pub(super) fn bytes_cell(class: &str, bytes: u64) -> String {
    format!(
        "<td class=\"{class}\" data-bytes=\"{bytes}\">{}</td>",
        human(bytes)
    )
}

/// `bytes` as a person reads it, in a span carrying the exact value.
pub(super) fn bytes_span(class: &str, bytes: u64) -> String {
    format!(
        "<span class=\"{class}\" data-bytes=\"{bytes}\">{}</span>",
        human(bytes)
    )
}

fn summary(view: &PlanView) -> String {
    let mut line = format!(
        "<p class=\"summary\"><b>{job}plan</b> <code>{id}</code>: {stages} stage(s), \
         <span class=\"total-tasks\" data-value=\"{tasks}\">{tasks}</span> task(s); \
         budget {budget}",
        job = view
            .job
            .as_deref()
            .map(|j| format!("{} ", escape(j)))
            .unwrap_or_default(),
        id = escape(&view.plan_id),
        stages = view.stages.len(),
        tasks = view.total_tasks(),
        budget = bytes_span("max-mem", view.max_mem),
    );
    if let Some(b) = view.task_budget {
        let _ = write!(line, " (tasks at once: {})", bytes_span("task-budget", b));
    }
    if let Some(b) = view.baseline_mem {
        let _ = write!(line, ", baseline {}", bytes_span("baseline", b));
    }
    let _ = write!(
        line,
        "; largest task {}; reads {}, writes {}",
        bytes_span("largest", view.largest_task()),
        bytes_span(
            "total-read",
            view.stages.iter().map(|s| s.bytes_read).sum::<u64>()
        ),
        bytes_span(
            "total-written",
            view.stages.iter().map(|s| s.bytes_written).sum::<u64>()
        ),
    );
    if let Some(b) = view.bytes_intermediate.filter(|&b| b > 0) {
        let _ = write!(
            line,
            " (of which intermediate {})",
            bytes_span("intermediate", b)
        );
    }
    line.push_str(".</p>");
    line
}

/// A small bar: the budget as the track, the task's projection filled in its stage's colour,
/// the tasks' share of the budget as a tick; then the share in per cent.
fn budget_bar(projected: u64, view: &PlanView, color: &str) -> String {
    const WIDTH: f64 = 120.0;
    let budget = view.max_mem.max(1) as f64;
    let share = projected as f64 / budget;
    let filled = (share.min(1.0) * WIDTH).max(if projected > 0 { 1.5 } else { 0.0 });
    let tick = view
        .task_budget
        .map(|b| {
            let x = (b as f64 / budget).min(1.0) * WIDTH;
            format!(
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"0\" y2=\"12\" stroke=\"#333\" stroke-width=\"1.5\"><title>tasks at once: {}</title></line>",
                human(b)
            )
        })
        .unwrap_or_default();
    let class = if projected > view.max_mem {
        " class=\"over\""
    } else {
        ""
    };
    format!(
        "<svg class=\"bar\" width=\"{WIDTH}\" height=\"12\" role=\"img\" aria-label=\"{pct:.1} % of the budget\">\
         <rect width=\"{WIDTH}\" height=\"12\" fill=\"#e6e6e6\" rx=\"2\"/>\
         <rect width=\"{filled:.1}\" height=\"12\" fill=\"{color}\" rx=\"2\"><title>{p} of {b}</title></rect>{tick}</svg>\
         <span{class} data-share=\"{share:.6}\">{pct:.1} %</span>",
        pct = share * 100.0,
        p = human(projected),
        b = human(view.max_mem),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> PlanView {
        PlanView::from_json(
            r#"{"plan_id":"ab<c>","max_mem":100000000,"task_budget":60000000,"tasks":3,
                "stages":[{"name":"00-a","label":"a: <read> & \"write\"","tasks":3,
                "projected_mem":25000000,"bytes_read":4000,"bytes_written":4000,"kind":"copy"}]}"#,
        )
        .expect("a plan view")
    }

    #[test]
    fn plan_fragment_escapes_text_and_carries_exact_numbers() {
        let page = plan_html(&view());
        assert!(page.contains("a: &lt;read&gt; &amp; &quot;write&quot;"));
        assert!(page.contains("data-plan-id=\"ab&lt;c&gt;\""));
        assert!(!page.contains("<read>"));
        assert!(page.contains("<td class=\"projected\" data-bytes=\"25000000\">25.0 MB</td>"));
        assert!(page.contains("data-share=\"0.250000\">25.0 %"));
        assert!(page.contains("<span class=\"task-budget\" data-bytes=\"60000000\">60.0 MB"));
    }

    #[test]
    fn a_task_over_the_budget_is_marked_and_its_bar_stays_in_the_track() {
        let mut v = view();
        v.stages[0].projected_mem = 250_000_000;
        let page = plan_html(&v);
        assert!(page.contains("class=\"over\" data-share=\"2.500000\">250.0 %"));
        assert!(page.contains("<rect width=\"120.0\" height=\"12\" fill=\"#4e79a7\""));
    }

    #[test]
    fn json_that_is_not_a_plan_is_a_usage_error() {
        let err = PlanView::from_json(r#"{"plan_id":"x","stages":[]}"#).err();
        assert!(
            matches!(&err, Some(crate::OpsError::Usage(m)) if m.contains("max_mem")),
            "{err:?}"
        );
    }
}
