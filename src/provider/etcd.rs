//! Traefik's etcd provider: the keys under `rootKey`, read whole, then watched.
//!
//! One session: connect, get the whole prefix, apply it, watch the prefix from the revision after
//! that read (no change in between is missed, none is polled for). A burst of events is one
//! change ([`super::DEBOUNCE`]); after it the whole prefix is read again, so the applied
//! routing is always a consistent read, never events patched together. A failed connect or a
//! lost session waits with [`super::Backoff`] (logged at each attempt) and starts again with a
//! full read; the last good snapshot serves meanwhile.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, TlsOptions, WatchOptions,
};

use super::Backoff;
use crate::config::EtcdProvider;
use crate::gateway::Gateway;

/// How long a connect or a read may take before the attempt counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Keep-alive pings on the connection (interval, timeout), so a store that vanished without
/// closing it (a network partition) ends the watch instead of leaving it waiting forever. Not
/// more often than 10 s: etcd answers pings closer than its `--grpc-keepalive-min-time` (5 s)
/// with GOAWAY.
const KEEP_ALIVE: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(5));

fn options(cfg: &EtcdProvider, base: &Path) -> Result<ConnectOptions, String> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(KEEP_ALIVE.0, KEEP_ALIVE.1)
        .with_keep_alive_while_idle(true);
    if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
        opts = opts.with_user(user.clone(), password.clone());
    }
    if let Some(tls) = &cfg.tls {
        if tls.insecure_skip_verify {
            return Err(
                "providers.etcd.tls.insecureSkipVerify is not supported (the etcd client always \
                 checks the server's certificate); give tls.ca instead"
                    .into(),
            );
        }
        let read = |f: &str| {
            std::fs::read(base.join(f)).map_err(|e| format!("providers.etcd.tls: {f}: {e}"))
        };
        let mut t = TlsOptions::new();
        if let Some(ca) = &tls.ca {
            t = t.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => t = t.identity(Identity::from_pem(read(cert)?, read(key)?)),
            (None, None) => {}
            _ => return Err("providers.etcd.tls: cert and key go together".into()),
        }
        opts = opts.with_tls(t);
    }
    Ok(opts)
}

/// The endpoints as the client wants them: `https://` when TLS is configured.
fn endpoints(cfg: &EtcdProvider) -> Vec<String> {
    cfg.endpoints
        .iter()
        .map(|e| {
            if e.contains("://") || cfg.tls.is_none() {
                e.clone()
            } else {
                format!("https://{e}")
            }
        })
        .collect()
}

async fn connect(cfg: &EtcdProvider, base: &Path) -> Result<Client, String> {
    let opts = options(cfg, base)?;
    tokio::time::timeout(REQUEST_TIMEOUT, Client::connect(endpoints(cfg), Some(opts)))
        .await
        .map_err(|_| "connecting timed out".to_string())?
        .map_err(|e| e.to_string())
}

/// Every pair under the root key, and the store's revision of that read.
async fn read_all(
    client: &mut Client,
    prefix: &str,
) -> Result<(Vec<(String, String)>, i64), String> {
    let resp = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.get(prefix, Some(GetOptions::new().with_prefix())),
    )
    .await
    .map_err(|_| "reading the keys timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let pairs = resp
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            )
        })
        .collect();
    Ok((pairs, revision))
}

fn prefix(cfg: &EtcdProvider) -> String {
    format!("{}/", cfg.root_key.trim_end_matches('/'))
}

/// What the store holds now under the root key, read once (for `wasmgate validate`).
pub async fn read_once(cfg: &EtcdProvider, base: &Path) -> Result<Vec<(String, String)>, String> {
    let mut client = connect(cfg, base).await?;
    Ok(read_all(&mut client, &prefix(cfg)).await?.0)
}

/// The provider's task: sessions, one after the other, until the gateway stops.
pub async fn run(gateway: Arc<Gateway>, cfg: EtcdProvider, base: std::path::PathBuf) {
    let mut backoff = Backoff::default();
    let endpoints = cfg.endpoints.join(",");
    loop {
        let outcome = match connect(&cfg, &base).await {
            Ok(client) => session(&gateway, &cfg, client, &mut backoff).await,
            Err(e) => Err(format!("cannot connect: {e}")),
        };
        let Err(e) = outcome;
        backoff.wait_after("etcd", &endpoints, &e).await;
    }
}

/// One connection: a full read, then the watch; returns when the connection is lost.
async fn session(
    gateway: &Arc<Gateway>,
    cfg: &EtcdProvider,
    mut client: Client,
    backoff: &mut Backoff,
) -> Result<std::convert::Infallible, String> {
    let prefix = prefix(cfg);
    let (pairs, revision) = read_all(&mut client, &prefix)
        .await
        .map_err(|e| format!("cannot read {prefix}: {e}"))?;
    if backoff.attempt > 0 {
        tracing::info!(
            provider = "etcd",
            "store reachable again; routing read again"
        );
    }
    backoff.reset();
    super::apply(gateway, "etcd", &cfg.root_key, pairs).await;
    let (_watcher, mut stream) = client
        .watch(
            prefix.as_str(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await
        .map_err(|e| format!("cannot watch {prefix}: {e}"))?;
    loop {
        let changed = next_change(&mut stream).await?;
        if !changed {
            continue;
        }
        // The rest of the burst: until the store has been quiet for DEBOUNCE.
        while let Ok(r) = tokio::time::timeout(super::DEBOUNCE, next_change(&mut stream)).await {
            r?;
        }
        let (pairs, _) = read_all(&mut client, &prefix)
            .await
            .map_err(|e| format!("cannot read {prefix}: {e}"))?;
        super::apply(gateway, "etcd", &cfg.root_key, pairs).await;
    }
}

/// The next watch message: true when it carries events; an error when the watch is over.
async fn next_change(stream: &mut etcd_client::WatchStream) -> Result<bool, String> {
    match stream.message().await {
        Ok(Some(msg)) if msg.canceled() => Err(format!(
            "the watch was cancelled by the store: {}",
            msg.cancel_reason()
        )),
        Ok(Some(msg)) => Ok(!msg.events().is_empty()),
        Ok(None) => Err("the watch ended".into()),
        Err(e) => Err(format!("watch lost: {e}")),
    }
}
