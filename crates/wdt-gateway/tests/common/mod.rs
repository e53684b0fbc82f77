//! Helpers shared by the binary's test files.

use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

/// Sends SIGTERM and waits up to `patience` for the process to exit (killing it after that).
pub(crate) async fn terminate(mut child: Child, patience: Duration) -> Option<ExitStatus> {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::task::spawn_blocking(move || {
        let step = Duration::from_millis(50);
        let mut waited = Duration::ZERO;
        while waited < patience {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(step);
            waited += step;
        }
        let _ = child.kill();
        None
    })
    .await
    .unwrap()
}
