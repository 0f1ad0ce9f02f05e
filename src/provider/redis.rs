//! Traefik's Redis provider: string keys under `rootKey`, in the same layout as etcd's.
//!
//! Changes arrive as keyspace notifications: at each connection wasmgate sets
//! `notify-keyspace-events` to `KA` (Traefik leaves that to the operator; a restarted Redis
//! forgets it, so wasmgate sets it again) and subscribes to the root key's pattern. When the
//! server refuses `CONFIG SET` (managed Redis often does) and notifications are not already on,
//! it reads the keys again every [`POLL`] instead. Either way a change is followed by a full
//! read (`SCAN` then `MGET`), debounced as etcd's; a lost connection is retried with backoff.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, ProtocolVersion, PushKind,
    RedisConnectionInfo,
};
use tokio::sync::mpsc;

use super::Backoff;
use crate::config::RedisProvider;
use crate::gateway::Gateway;

/// How often the keys are read again when keyspace notifications cannot be turned on.
pub const POLL: Duration = Duration::from_secs(2);

/// How long a connect or a read may take before the attempt counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

fn client(cfg: &RedisProvider) -> Result<Client, String> {
    let endpoint = cfg
        .endpoints
        .first()
        .ok_or("providers.redis.endpoints is empty")?;
    let endpoint = endpoint.strip_prefix("redis://").unwrap_or(endpoint);
    let (host, port) = match endpoint.rsplit_once(':') {
        Some((h, p)) => (
            h.trim_matches(['[', ']']).to_string(),
            p.parse::<u16>()
                .map_err(|_| format!("providers.redis.endpoints: bad port in {endpoint:?}"))?,
        ),
        None => (endpoint.to_string(), 6379),
    };
    let info = ConnectionInfo {
        addr: ConnectionAddr::Tcp(host, port),
        redis: RedisConnectionInfo {
            db: cfg.db,
            username: cfg.username.clone(),
            password: cfg.password.clone(),
            // RESP3: notifications come on the same connection, and its loss is one of them.
            protocol: ProtocolVersion::RESP3,
        },
    };
    Client::open(info).map_err(|e| e.to_string())
}

async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    tokio::time::timeout(REQUEST_TIMEOUT, f)
        .await
        .map_err(|_| format!("{what} timed out"))?
        .map_err(|e| format!("{what}: {e}"))
}

/// `SCAN`'s pattern for the keys under `root`: glob characters in it matched as themselves.
fn pattern(root: &str) -> String {
    let mut p = String::new();
    for c in root.trim_end_matches('/').chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p + "/*"
}

/// Every pair under the root key.
async fn read_all(
    conn: &mut MultiplexedConnection,
    root: &str,
) -> Result<Vec<(String, String)>, String> {
    let pattern = pattern(root);
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = timed(
            "SCAN",
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(conn),
        )
        .await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<Option<String>> =
        timed("MGET", redis::cmd("MGET").arg(&keys).query_async(conn)).await?;
    // A key removed between SCAN and MGET is gone: skipped. Keys of other types (hashes...) are
    // not Traefik's layout; MGET gives nil for them too.
    Ok(keys
        .into_iter()
        .zip(values)
        .filter_map(|(k, v)| Some((k, v?)))
        .collect())
}

/// What the store holds now under the root key, read once (for `wasmgate validate`).
pub async fn read_once(cfg: &RedisProvider) -> Result<Vec<(String, String)>, String> {
    let c = client(cfg)?;
    let mut conn = timed("connecting", c.get_multiplexed_async_connection()).await?;
    read_all(&mut conn, &cfg.root_key).await
}

/// Turns keyspace notifications on, or finds them on already; false when neither.
async fn notifications_on(conn: &mut MultiplexedConnection) -> bool {
    let set: Result<(), String> = timed(
        "CONFIG SET",
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg("KA")
            .query_async(conn),
    )
    .await;
    if set.is_ok() {
        return true;
    }
    let got: Result<Vec<String>, String> = timed(
        "CONFIG GET",
        redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query_async(conn),
    )
    .await;
    // `K` (keyspace channel) with `A` (all commands), or with both `$` (string) and `g`
    // (DEL, EXPIRE, RENAME) covers what changes the routing keys.
    matches!(got.as_deref(), Ok([_, flags])
        if flags.contains('K') && (flags.contains('A') || (flags.contains('$') && flags.contains('g'))))
}

/// The provider's task: sessions, one after the other, until the gateway stops.
pub async fn run(gateway: Arc<Gateway>, cfg: RedisProvider) {
    let mut backoff = Backoff::default();
    let endpoints = cfg.endpoints.join(",");
    loop {
        let Err(e) = session(&gateway, &cfg, &mut backoff).await;
        backoff.wait_after("redis", &endpoints, &e).await;
    }
}

/// One connection: notifications on (or polling), a full read, then reads after each change.
async fn session(
    gateway: &Arc<Gateway>,
    cfg: &RedisProvider,
    backoff: &mut Backoff,
) -> Result<std::convert::Infallible, String> {
    let c = client(cfg)?;
    let (tx, mut pushed) = mpsc::unbounded_channel();
    let config = AsyncConnectionConfig::new().set_push_sender(tx);
    let mut conn = timed(
        "connecting",
        c.get_multiplexed_async_connection_with_config(&config),
    )
    .await?;
    let notified = notifications_on(&mut conn).await;
    // Subscribed before the first read, so a change right after it is not missed.
    if notified {
        let channel = format!("__keyspace@{}__:{}", cfg.db, pattern(&cfg.root_key));
        timed("PSUBSCRIBE", conn.psubscribe(&channel)).await?;
    } else {
        tracing::warn!(
            provider = "redis",
            "keyspace notifications are off and CONFIG SET is refused: reading the keys every {POLL:?}"
        );
    }
    let pairs = read_all(&mut conn, &cfg.root_key).await?;
    if backoff.attempt > 0 {
        tracing::info!(
            provider = "redis",
            "store reachable again; routing read again"
        );
    }
    backoff.reset();
    super::apply(gateway, "redis", &cfg.root_key, pairs).await;
    loop {
        if notified {
            next_change(&mut pushed).await?;
            // The rest of the burst: until the store has been quiet for DEBOUNCE.
            while let Ok(m) = tokio::time::timeout(super::DEBOUNCE, next_change(&mut pushed)).await
            {
                m?;
            }
        } else {
            tokio::time::sleep(POLL).await;
        }
        let pairs = read_all(&mut conn, &cfg.root_key).await?;
        // Unchanged pairs are not rebuilt (Gateway::apply_kv compares them).
        super::apply(gateway, "redis", &cfg.root_key, pairs).await;
    }
}

/// Waits for a change notification; an error when the connection has ended.
async fn next_change(pushed: &mut mpsc::UnboundedReceiver<redis::PushInfo>) -> Result<(), String> {
    loop {
        match pushed.recv().await {
            None => return Err("connection lost".into()),
            Some(p) if p.kind == PushKind::Disconnection => return Err("connection lost".into()),
            Some(p) if p.kind == PushKind::PMessage => return Ok(()),
            // Subscription confirmations and the like.
            Some(_) => {}
        }
    }
}
