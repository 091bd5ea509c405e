//! Signals and crashes: SIGINT/SIGTERM ask the loop to checkpoint and stop,
//! a second signal exits at once, and a panic writes `crash-report.md`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::checkpoint;

/// Fault injection for reliability tests: panic right after this optimizer
/// step (before its checkpoint), as a bug in the loop would.
pub const FAULT_ENV: &str = "TANDEM_FAULT_PANIC_AT_STEP";

static STOP: AtomicBool = AtomicBool::new(false);
static CRASH: Mutex<Option<CrashInfo>> = Mutex::new(None);
/// The optimizer step in progress, for the crash report.
static CRASH_STEP: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone)]
struct CrashInfo {
    run_dir: PathBuf,
    last: String,
}

extern "C" fn on_signal(_: libc::c_int) {
    if STOP.swap(true, Ordering::SeqCst) {
        // A second signal: the user insists. Checkpoints are atomic, so
        // leaving now loses at most the steps since the last one.
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// Installs the signal handlers and the crash-report hook for a run in
/// `run_dir` that is at `step`.
pub(super) fn arm(run_dir: &Path, step: u64) {
    STOP.store(false, Ordering::SeqCst);
    // SAFETY: the handler only touches an atomic and calls _exit.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let crash = CRASH.lock().ok().and_then(|c| c.clone());
            if let Some(c) = crash {
                let ckdir = checkpoint::checkpoints_dir(&c.run_dir);
                let resume = if ckdir.join("latest").is_file() {
                    format!("training continues from the newest complete checkpoint in {}", ckdir.display())
                } else {
                    "no checkpoint was written yet, so training starts over".to_string()
                };
                let last = if c.last.is_empty() { "(none logged yet)".to_string() } else { format!("`{}`", c.last) };
                let text = format!(
                    "# tandem crash report\n\n- step: {}\n- panic: {}\n- last metrics: {last}\n- resume: rerun the same command; {resume}\n\n## backtrace\n\n```\n{}\n```\n",
                    CRASH_STEP.load(Ordering::SeqCst),
                    info,
                    std::backtrace::Backtrace::force_capture()
                );
                let path = c.run_dir.join("crash-report.md");
                if tandem_io::write_bytes_atomic(&path, tandem_io::Overwrite::Allow, text.as_bytes()).is_ok() {
                    eprintln!("crash report written to {}", path.display());
                }
            }
            previous(info);
        }));
    });
    set_last(run_dir, "");
    CRASH_STEP.store(step, Ordering::SeqCst);
}

/// The last line of `metrics.jsonl`, quoted by a crash report.
pub(super) fn set_last(run_dir: &Path, last: &str) {
    if let Ok(mut c) = CRASH.lock() {
        *c = Some(CrashInfo {
            run_dir: run_dir.to_path_buf(),
            last: last.to_string(),
        });
    }
}

/// Records that optimizer step `step` is done (panicking here when
/// [`FAULT_ENV`] names it, at the caller: the loop).
#[track_caller]
pub(super) fn reached(step: u64) {
    CRASH_STEP.store(step, Ordering::SeqCst);
    if fault_step() == Some(step) {
        panic!("fault injected by {FAULT_ENV} at step {step}");
    }
}

fn fault_step() -> Option<u64> {
    std::env::var(FAULT_ENV).ok()?.parse().ok()
}

/// Whether SIGINT or SIGTERM asked the run to stop.
pub(super) fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
