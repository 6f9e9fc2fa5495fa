//! The plan as HTML for notebooks (`chunkmill._html.plan_html`): the same fragment the
//! `--report` page shows, rendered by chunkmill-ops, so the two views cannot drift apart.

use chunkmill_ops::job::report::{plan_html as render, PlanView};
use pyo3::prelude::*;

use crate::errors;

/// The HTML fragment of a plan given as its JSON (`chunkmill plan … --json`).
#[pyfunction]
pub fn plan_html(plan_json: &str) -> PyResult<String> {
    let view = PlanView::from_json(plan_json).map_err(|e| errors::usage(e.to_string()))?;
    Ok(render(&view))
}
