//! Polling a file for new content: key files and the console token.
//!
//! Kubernetes updates a secret volume by swapping a `..data` symlink, which
//! file-event watchers miss or report oddly; polling the content is simple
//! and catches every form of update.

use std::{path::PathBuf, time::Duration};
use tokio_util::sync::CancellationToken;

/// What a poll found.
pub(crate) enum Seen {
    /// Content other than the last seen.
    Changed(Vec<u8>),
    /// The file could not be read (told once, until it can be again;
    /// mid-swap a file can be briefly missing).
    Unreadable(std::io::Error),
}

/// Reads `path` every `every` until `shutdown`, telling `on` of each new
/// content. What the file holds at start is taken as already seen.
pub(crate) fn spawn(
    path: PathBuf,
    every: Duration,
    shutdown: CancellationToken,
    mut on: impl FnMut(Seen) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_seen = tokio::fs::read(&path).await.ok();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            match tokio::fs::read(&path).await {
                Err(e) => {
                    if last_seen.take().is_some() {
                        on(Seen::Unreadable(e));
                    }
                }
                Ok(content) if last_seen.as_deref() == Some(&content[..]) => {}
                Ok(content) => {
                    last_seen = Some(content.clone());
                    on(Seen::Changed(content));
                }
            }
        }
    })
}
