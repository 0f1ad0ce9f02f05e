//! Hot reload: watch the routing file and swap in a new snapshot when it changes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::gateway::Gateway;

/// Changes closer together than this are one change (editors write in several steps).
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Keeps the file watcher alive; dropping it stops reloading.
pub struct ReloadWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReloadWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `gateway`'s routing file, if the file provider is used with `watch: true`.
pub fn watch(gateway: Arc<Gateway>) -> notify::Result<Option<ReloadWatcher>> {
    let Some(file) = gateway.loaded.routing_file.clone() else {
        return Ok(None);
    };
    let watching = gateway
        .loaded
        .config
        .providers
        .file
        .as_ref()
        .is_some_and(|f| f.watch);
    if !watching {
        return Ok(None);
    }
    let file = std::path::absolute(&file).unwrap_or(file);
    // Watch the directory: editors and `mv` replace the file, which a watch on the file itself misses.
    let dir = file
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = file.file_name().map(|n| n.to_os_string());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            // Reading the file (our own reload does) is an access event, not a change: without
            // this, each reload would trigger the next, forever.
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            if ev
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
            {
                let _ = tx.send(());
            }
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            // Off the async workers: building a snapshot compiles rules and starts plugins.
            // The gateway enters its runtime itself, so middlewares are created inside it.
            let gw = gateway.clone();
            match tokio::task::spawn_blocking(move || gw.reload_routing()).await {
                Ok(Ok(generation)) => {
                    tracing::info!(generation, "routing configuration reloaded")
                }
                Ok(Err(errors)) => {
                    for e in &errors.0 {
                        tracing::error!("reload rejected, previous configuration kept: {e}");
                    }
                }
                Err(e) => tracing::error!("reload failed: {e}"),
            }
        }
    });
    tracing::info!(file = %file.display(), "watching routing file");
    Ok(Some(ReloadWatcher {
        _watcher: watcher,
        task,
    }))
}
