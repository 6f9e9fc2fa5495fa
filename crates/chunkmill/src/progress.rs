//! A progress bar over the decoded bytes of a run, with bytes/s and ETA.

use chunkmill_exec::Event;
use indicatif::{ProgressBar, ProgressStyle};

/// Renders executor events; silent when hidden.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar over `total` decoded bytes; hidden when `show` is false.
    pub fn new(total: u64, show: bool) -> Self {
        let bar = if show {
            ProgressBar::new(total)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg:28} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Self { bar }
    }

    /// Take one executor event.
    pub fn on_event(&self, event: &Event) {
        match event {
            Event::StageStarted {
                label,
                tasks,
                done_before,
                decoded_bytes,
                ..
            } => {
                self.bar.set_message(label.clone());
                if *tasks > 0 {
                    self.bar.inc(decoded_bytes / tasks * done_before);
                }
            }
            Event::TaskFinished { decoded_bytes, .. } => self.bar.inc(*decoded_bytes),
            Event::TaskRetrying {
                stage,
                task,
                attempt,
                error,
            } => {
                self.bar.println(format!("chunkmill: stage {stage} task {task}: attempt {attempt} failed, retrying: {error}"));
            }
            Event::StageFinished { .. } => {}
        }
    }

    /// Remove the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
