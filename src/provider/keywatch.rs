//! Key rotation: a key given as a file is re-read when the file changes
//! (polled, see `ops::filewatch`). A malformed new key is refused and the
//! old one kept.

use super::{ProviderClient, gate::Gate};
use crate::{
    domain::ApiKey,
    ops::{
        filewatch::{self, Seen},
        metrics::{KeyReload, Metrics},
    },
};
use std::{path::PathBuf, sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// A key file to watch for one provider.
#[derive(Debug, Clone)]
pub(crate) struct KeyFile {
    pub(crate) path: PathBuf,
    pub(crate) setting: &'static str,
}

/// Polls `file` every `every` until shutdown; a changed, valid key goes to
/// `client` and ends an auth pause on `gate`.
pub(crate) fn spawn(
    file: KeyFile,
    every: Duration,
    client: ProviderClient,
    gate: Arc<Gate>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let provider = client.provider();
    let path = file.path.clone();
    filewatch::spawn(path, every, shutdown, move |seen| match seen {
        Seen::Unreadable(e) => {
            metrics.key_reload(provider, KeyReload::Unreadable);
            tracing::warn!(setting = file.setting, path = %file.path.display(), error = %e, "key file unreadable; keeping the current key");
        }
        Seen::Changed(content) => {
            let parsed = String::from_utf8(content)
                .map_err(|_| "not valid UTF-8".to_owned())
                .and_then(|text| ApiKey::parse(&text, file.setting).map_err(|e| e.to_string()));
            match parsed {
                Ok(key) if key == client.key() => {}
                Ok(key) => {
                    client.set_key(key);
                    metrics.key_reload(provider, KeyReload::Rotated);
                    tracing::info!(%provider, setting = file.setting, "API key rotated from its file");
                    gate.key_changed();
                }
                Err(reason) => {
                    metrics.key_reload(provider, KeyReload::Refused);
                    tracing::error!(%provider, setting = file.setting, %reason, "new key refused; keeping the current key");
                }
            }
        }
    })
}
