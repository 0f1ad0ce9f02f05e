//! Fleets: two wasmgate replicas fed by one real etcd (and one real Redis), in Traefik's KV
//! layout. Each test starts its own store (own data dir, free ports on 127.0.0.1) and kills it
//! on drop. The replicas are in-process gateways, one running its plugin on wasmtime and the
//! other on wasmer, with the same expectations.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wasmgate::provider::Providers;

use crate::common::*;

/// How long a change may take to reach a replica (the debounce is 200 ms).
const CONVERGE: Duration = Duration::from_secs(10);
/// ... and after the store came back (the backoff has grown meanwhile: 1, 2, 4 s...).
const RECONNECT: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A store's server process, killed on drop (so a failing test leaves none behind).
struct Store {
    command: Vec<String>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Store {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.command[0]));
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real etcd, its data in a temp dir.
struct Etcd {
    store: Store,
    client_port: u16,
    /// The test's own client TLS, when etcd serves TLS.
    tls: Option<etcd_client::TlsOptions>,
}

/// The files of an etcd serving TLS and requiring client certificates.
struct EtcdTls {
    ca: PathBuf,
    server: crate::certs::CertFiles,
    client: crate::certs::CertFiles,
}

impl Etcd {
    /// Ports and data dir chosen, not started yet.
    fn new() -> Etcd {
        Etcd::with_tls(None)
    }

    fn with_tls(tls: Option<&EtcdTls>) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let c = format!("{scheme}://127.0.0.1:{client}");
        let p = format!("http://127.0.0.1:{peer}");
        let mut command = [
            "/usr/bin/etcd",
            "--name",
            "default",
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--listen-client-urls",
            &c,
            "--advertise-client-urls",
            &c,
            "--listen-peer-urls",
            &p,
            "--initial-advertise-peer-urls",
            &p,
            "--initial-cluster",
            &format!("default={p}"),
            "--log-level",
            "warn",
        ]
        .map(String::from)
        .to_vec();
        let mut client_tls = None;
        if let Some(t) = tls {
            let arg = |p: &PathBuf| p.display().to_string();
            command.extend([
                "--cert-file".into(),
                arg(&t.server.cert),
                "--key-file".into(),
                arg(&t.server.key),
                "--trusted-ca-file".into(),
                arg(&t.ca),
                "--client-cert-auth".into(),
            ]);
            let read = |p: &PathBuf| std::fs::read(p).unwrap();
            client_tls = Some(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(read(&t.ca)))
                    .identity(etcd_client::Identity::from_pem(
                        read(&t.client.cert),
                        read(&t.client.key),
                    )),
            );
        }
        Etcd {
            store: Store {
                command,
                child: None,
                dir,
            },
            client_port: client,
            tls: client_tls,
        }
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Starts (or restarts, same data and ports) and waits until it answers.
    async fn start(&mut self) {
        self.store.spawn();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = self.client().await {
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_secs(2), c.get("ping", None)).await
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not start:\n{}",
                self.store.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn client(&self) -> Result<etcd_client::Client, etcd_client::Error> {
        let mut opts =
            etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
        let mut endpoint = self.endpoint();
        if let Some(tls) = &self.tls {
            opts = opts.with_tls(tls.clone());
            endpoint = format!("https://{endpoint}");
        }
        etcd_client::Client::connect([endpoint], Some(opts)).await
    }

    /// Writes `pairs` in one transaction (a deploy writing many keys at once).
    async fn put(&self, pairs: &[(&str, String)]) {
        let ops: Vec<etcd_client::TxnOp> = pairs
            .iter()
            .map(|(k, v)| etcd_client::TxnOp::put(*k, v.as_str(), None))
            .collect();
        let mut c = self.client().await.unwrap();
        c.txn(etcd_client::Txn::new().and_then(ops)).await.unwrap();
    }

    async fn delete(&self, key: &str) {
        self.client()
            .await
            .unwrap()
            .delete(key, None)
            .await
            .unwrap();
    }
}

/// A real Redis, without persistence.
struct Redis {
    store: Store,
    port: u16,
}

impl Redis {
    fn new() -> Redis {
        Redis::with_args(&[])
    }

    /// With more `redis-server` options.
    fn with_args(extra: &[&str]) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = [
            "/usr/bin/redis-server",
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir.path().display().to_string(),
        ]
        .map(String::from)
        .to_vec();
        command.extend(extra.iter().map(|a| a.to_string()));
        Redis {
            store: Store {
                command,
                child: None,
                dir,
            },
            port,
        }
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) {
        self.store.spawn();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = self.conn().await {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
                if pong.is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis did not start:\n{}",
                self.store.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn conn(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(format!("redis://{}/", self.endpoint()))?;
        client.get_multiplexed_async_connection().await
    }

    /// Writes `pairs` with one MSET.
    async fn put(&self, pairs: &[(&str, String)]) {
        let mut cmd = redis::cmd("MSET");
        for (k, v) in pairs {
            cmd.arg(*k).arg(v);
        }
        let mut c = self.conn().await.unwrap();
        let _: () = cmd.query_async(&mut c).await.unwrap();
    }
}

/// One wasmgate replica and its provider tasks.
struct Replica {
    t: TestServer,
    _providers: Providers,
    engine: &'static str,
}

impl Replica {
    async fn start(engine: &'static str, providers: &str) -> Replica {
        let plugin = example_plugin("add-headers");
        let install = format!(
            r#"entryPoints:
  web: {{ address: "127.0.0.1:0" }}
  traefik: {{ address: "127.0.0.1:0" }}
cache: {{ enabled: false }}
metrics: {{ prometheus: {{}} }}
plugins:
  example: {{ path: "{}", engine: {engine} }}
providers:
{providers}"#,
            plugin.display()
        );
        let t = start(&[("wasmgate.yaml", &install)]).await;
        let providers = wasmgate::provider::start(&t.gateway);
        Replica {
            t,
            _providers: providers,
            engine,
        }
    }

    fn metrics_addr(&self) -> SocketAddr {
        self.t.server.as_ref().unwrap().addrs["traefik"]
    }

    async fn get(&self, path: &str) -> Reply {
        send(get(self.t.url(path))).await
    }

    /// Polls `path` until `want` holds (a change has arrived), or fails after `limit`.
    async fn wait_for(&self, path: &str, limit: Duration, want: impl Fn(&Reply) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            let r = self.get(path).await;
            if want(&r) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {path} still answers {} {:?} after {limit:?}",
                self.engine,
                r.status,
                r.body
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metrics(&self) -> String {
        send(get(format!("http://{}/metrics", self.metrics_addr())))
            .await
            .body
    }
}

fn from(name: &str) -> impl Fn(&Reply) -> bool + '_ {
    move |r: &Reply| r.status == 200 && r.body.starts_with(&format!("Name: {name}\n"))
}

/// The keys of a router `r` on `path` to service `svc`, and of `svc` with one server.
fn route(r: &str, path: &str, svc: &str, server: SocketAddr) -> Vec<(String, String)> {
    vec![
        (
            format!("traefik/http/routers/{r}/rule"),
            format!("PathPrefix(`{path}`)"),
        ),
        (format!("traefik/http/routers/{r}/service"), svc.to_string()),
        (
            format!("traefik/http/services/{svc}/loadBalancer/servers/0/url"),
            format!("http://{server}"),
        ),
    ]
}

fn refs(pairs: &[(String, String)]) -> Vec<(&str, String)> {
    pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect()
}

/// The value of the `wasmgate_config_info` series: its hash label.
fn config_hash(metrics: &str) -> String {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("wasmgate_config_info{hash=\""))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no wasmgate_config_info in\n{metrics}"))
        .to_string()
}

async fn wait_rejected(replicas: &[&Replica], before: &[u64]) {
    for (r, before) in replicas.iter().zip(before) {
        let mut rx = r.t.gateway.reloads();
        let seen = tokio::time::timeout(CONVERGE, rx.wait_for(|s| s.rejected > *before)).await;
        assert!(seen.is_ok(), "{}: the broken value was not seen", r.engine);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_two_replicas_follow_the_store() {
    let one = echo_upstream("one").await;
    let two = echo_upstream("two").await;
    let mut etcd = Etcd::new();
    etcd.start().await;
    etcd.put(&refs(&route("r1", "/one", "one", one))).await;
    let providers = format!(
        "  etcd: {{ endpoints: [\"{}\"], rootKey: traefik }}\n",
        etcd.endpoint()
    );
    let a = Replica::start("wasmtime", &providers).await;
    let b = Replica::start("wasmer", &providers).await;
    let both = [&a, &b];

    // Both serve what is stored.
    for r in both {
        r.wait_for("/one", CONVERGE, from("one")).await;
        assert_eq!(r.get("/other").await.status, 404, "{}", r.engine);
    }

    let first_hash = config_hash(&a.metrics().await);

    // A change reaches both.
    etcd.put(&refs(&route("r2", "/two", "two", two))).await;
    for r in both {
        r.wait_for("/two", CONVERGE, from("two")).await;
    }

    // A router with a plugin middleware, added in the store, serves on both.
    let mut plugin = route("r3", "/plugin", "one", one);
    plugin.extend([
        (
            "traefik/http/routers/r3/middlewares/0".to_string(),
            "demo".to_string(),
        ),
        (
            "traefik/http/middlewares/demo/plugin/example/headers/Foo".to_string(),
            "Bar".to_string(),
        ),
    ]);
    etcd.put(&refs(&plugin)).await;
    for r in both {
        r.wait_for("/plugin", CONVERGE, |r| {
            from("one")(r) && r.body.contains("\nfoo: Bar\n")
        })
        .await;
    }

    // Both run the same configuration: the same hash, and a sync time.
    let (ma, mb) = (a.metrics().await, b.metrics().await);
    assert_eq!(config_hash(&ma), config_hash(&mb));
    assert_ne!(
        config_hash(&ma),
        first_hash,
        "the routing changed, so did its hash"
    );
    for m in [&ma, &mb] {
        assert!(
            m.contains("wasmgate_provider_last_sync_timestamp_seconds{provider=\"etcd\"} "),
            "{m}"
        );
    }

    // A broken value (not a number) keeps the last good routing on both.
    let generations: Vec<u64> = both.iter().map(|r| r.t.gateway.generation()).collect();
    let rejected: Vec<u64> = both
        .iter()
        .map(|r| r.t.gateway.reloads().borrow().rejected)
        .collect();
    etcd.put(&[("traefik/http/routers/r2/priority", "high".into())])
        .await;
    wait_rejected(&both, &rejected).await;
    for (r, g) in both.iter().zip(&generations) {
        assert_eq!(r.t.gateway.generation(), *g, "{}", r.engine);
        r.wait_for("/two", Duration::ZERO, from("two")).await;
        r.wait_for("/plugin", Duration::ZERO, |r| {
            r.body.contains("\nfoo: Bar\n")
        })
        .await;
    }
    // ... and so does a reference to nothing (the snapshot, not the mapping, refuses it).
    etcd.delete("traefik/http/routers/r2/priority").await;
    let rejected: Vec<u64> = both
        .iter()
        .map(|r| r.t.gateway.reloads().borrow().rejected)
        .collect();
    etcd.put(&[("traefik/http/routers/r2/service", "nowhere".into())])
        .await;
    wait_rejected(&both, &rejected).await;
    for r in both {
        r.wait_for("/two", Duration::ZERO, from("two")).await;
    }
    etcd.put(&[("traefik/http/routers/r2/service", "two".into())])
        .await;

    // The store stopped: both keep serving.
    etcd.store.kill();
    // Long enough for the watch to notice and the first reconnects to fail.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for r in both {
        r.wait_for("/one", Duration::ZERO, from("one")).await;
        r.wait_for("/two", Duration::ZERO, from("two")).await;
        r.wait_for("/plugin", Duration::ZERO, |r| {
            r.body.contains("\nfoo: Bar\n")
        })
        .await;
    }

    // Restarted on the same data and ports: a new value reaches both.
    etcd.start().await;
    etcd.put(&[("traefik/http/routers/r1/rule", "PathPrefix(`/uno`)".into())])
        .await;
    for r in both {
        r.wait_for("/uno", RECONNECT, from("one")).await;
        assert_eq!(r.get("/one").await.status, 404, "{}", r.engine);
        r.wait_for("/two", Duration::ZERO, from("two")).await;
    }
    let (ma, mb) = (a.metrics().await, b.metrics().await);
    assert_eq!(config_hash(&ma), config_hash(&mb));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_unreachable_at_start_then_routing_arrives() {
    let one = echo_upstream("one").await;
    let mut etcd = Etcd::new();
    let providers = format!("  etcd: {{ endpoints: [\"{}\"] }}\n", etcd.endpoint());
    let a = Replica::start("wasmtime", &providers).await;
    // The entry points are up, serving nothing yet.
    assert_eq!(a.get("/one").await.status, 404);
    etcd.start().await;
    etcd.put(&refs(&route("r1", "/one", "one", one))).await;
    a.wait_for("/one", RECONNECT, from("one")).await;
}

/// `wasmgate validate -c install [--provider p]`, on a blocking thread: exit code, stdout, stderr.
async fn validate(
    install: PathBuf,
    provider: Option<&'static str>,
) -> (Option<i32>, String, String) {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmgate"));
        cmd.arg("validate").arg("-c").arg(&install);
        if let Some(p) = provider {
            cmd.arg("--provider").arg(p);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_reads_what_etcd_stores_now() {
    let one = echo_upstream("one").await;
    let mut etcd = Etcd::new();
    etcd.start().await;
    etcd.put(&refs(&route("r1", "/one", "one", one))).await;
    let dir = write_files(&[(
        "wasmgate.yaml",
        &format!(
            "entryPoints:\n  web: {{ address: \"127.0.0.1:0\" }}\nproviders:\n  etcd: {{ endpoints: [\"{}\"] }}\n",
            etcd.endpoint()
        ),
    )]);
    let install = dir.path().join("wasmgate.yaml");

    let (code, out, err) = validate(install.clone(), Some("etcd")).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("3 key(s) under traefik/"), "{out}");

    // A value that does not parse: the key is named.
    etcd.put(&[("traefik/http/routers/r1/priority", "high".into())])
        .await;
    let (code, out, err) = validate(install.clone(), Some("etcd")).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("error: etcd:traefik/http/routers/r1/priority: invalid value"),
        "{err}"
    );
    // Without --provider only the install file is checked.
    let (code, out, err) = validate(install.clone(), None).await;
    assert_eq!(code, Some(0), "{out}{err}");
    // A provider the install file does not configure is an error.
    let (code, _, err) = validate(install.clone(), Some("redis")).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no providers.redis"), "{err}");

    // A reference to nothing: found when the snapshot is built, named by its key too.
    etcd.delete("traefik/http/routers/r1/priority").await;
    etcd.put(&[
        ("traefik/http/routers/r2/rule", "Path(`/x`)".into()),
        ("traefik/http/routers/r2/service", "nowhere".into()),
    ])
    .await;
    let (code, out, err) = validate(install.clone(), Some("etcd")).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(
            "error: etcd:traefik/http/routers/r2/service: service \"nowhere@etcd\" does not exist"
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_two_replicas_follow_the_store() {
    let one = echo_upstream("one").await;
    let two = echo_upstream("two").await;
    let mut redis = Redis::new();
    redis.start().await;
    let first = route("r1", "/one", "one", one);
    redis.put(&refs(&first)).await;
    let providers = format!(
        "  redis: {{ endpoints: [\"{}\"], rootKey: traefik }}\n",
        redis.endpoint()
    );
    let a = Replica::start("wasmtime", &providers).await;
    let b = Replica::start("wasmer", &providers).await;
    let both = [&a, &b];
    for r in both {
        r.wait_for("/one", CONVERGE, from("one")).await;
    }
    redis.put(&refs(&route("r2", "/two", "two", two))).await;
    for r in both {
        r.wait_for("/two", CONVERGE, from("two")).await;
    }
    let (ma, mb) = (a.metrics().await, b.metrics().await);
    assert_eq!(config_hash(&ma), config_hash(&mb));
    assert!(
        ma.contains("wasmgate_provider_last_sync_timestamp_seconds{provider=\"redis\"} "),
        "{ma}"
    );

    // The store stopped: both keep serving.
    redis.store.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for r in both {
        r.wait_for("/one", Duration::ZERO, from("one")).await;
        r.wait_for("/two", Duration::ZERO, from("two")).await;
    }

    // Restarted (empty: no persistence), the routing written again with a change: both follow.
    redis.start().await;
    let mut again = route("r1", "/uno", "one", one);
    again.extend(route("r2", "/two", "two", two));
    redis.put(&refs(&again)).await;
    for r in both {
        r.wait_for("/uno", RECONNECT, from("one")).await;
        r.wait_for("/two", Duration::ZERO, from("two")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_without_config_set_falls_back_to_polling() {
    let one = echo_upstream("one").await;
    // Managed Redis often refuses CONFIG: notifications cannot be turned on.
    let mut redis = Redis::with_args(&["--rename-command", "CONFIG", ""]);
    redis.start().await;
    let refused: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(&mut redis.conn().await.unwrap())
        .await;
    assert!(refused.is_err(), "CONFIG still works: {refused:?}");
    let providers = format!("  redis: {{ endpoints: [\"{}\"] }}\n", redis.endpoint());
    let a = Replica::start("wasmtime", &providers).await;
    a.wait_for("/one", CONVERGE, |r| r.status == 404).await;
    redis.put(&refs(&route("r1", "/one", "one", one))).await;
    // Read again every 2 s.
    a.wait_for("/one", CONVERGE, from("one")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_and_file_provider_together() {
    let file_up = echo_upstream("file").await;
    let kv_up = echo_upstream("kv").await;
    let mut etcd = Etcd::new();
    etcd.start().await;
    let routing = |extra: &str| {
        format!(
            r#"http:
  routers:
    f: {{ rule: "PathPrefix(`/file`)", service: filesvc }}
{extra}  middlewares:
    hdr: {{ headers: {{ customRequestHeaders: {{ X-From-File: "yes" }} }} }}
  services:
    filesvc: {{ loadBalancer: {{ servers: [{{ url: "http://{file_up}" }}] }} }}
"#
        )
    };
    let install = format!(
        r#"entryPoints:
  web: {{ address: "127.0.0.1:0" }}
  traefik: {{ address: "127.0.0.1:0" }}
api: {{}}
providers:
  file: {{ filename: routing.yaml }}
  etcd: {{ endpoints: ["{}"] }}
"#,
        etcd.endpoint()
    );
    let t = start(&[("wasmgate.yaml", &install), ("routing.yaml", &routing(""))]).await;
    let _watcher = wasmgate::reload::watch(t.gateway.clone()).unwrap();
    let _providers = wasmgate::provider::start(&t.gateway);
    let a = Replica {
        t,
        _providers: Providers::default(),
        engine: "wasmtime",
    };
    a.wait_for("/file", Duration::ZERO, from("file")).await;

    // The store's router uses the file's middleware and service by `@file`, its own by name.
    let mut keys = route("k", "/kv", "filesvc@file", file_up);
    keys.truncate(2);
    keys.extend([
        (
            "traefik/http/routers/k/middlewares/0".to_string(),
            "hdr@file".to_string(),
        ),
        (
            "traefik/http/routers/own/rule".to_string(),
            "PathPrefix(`/own`)".to_string(),
        ),
        (
            "traefik/http/routers/own/service".to_string(),
            "kvsvc".to_string(),
        ),
        (
            "traefik/http/services/kvsvc/loadBalancer/servers/0/url".to_string(),
            format!("http://{kv_up}"),
        ),
    ]);
    etcd.put(&refs(&keys)).await;
    a.wait_for("/kv", CONVERGE, |r| {
        from("file")(r) && r.body.contains("\nx-from-file: yes\n")
    })
    .await;
    a.wait_for("/own", Duration::ZERO, from("kv")).await;
    a.wait_for("/file", Duration::ZERO, from("file")).await;

    // /api/rawdata names each item with its provider.
    let raw = send(get(format!("http://{}/api/rawdata", a.metrics_addr()))).await;
    let raw: serde_json::Value = serde_json::from_str(&raw.body).unwrap();
    assert_eq!(raw["routers"]["k@etcd"]["service"], "filesvc@file", "{raw}");
    assert_eq!(raw["routers"]["own@etcd"]["service"], "kvsvc", "{raw}");
    assert_eq!(raw["routers"]["f@file"]["service"], "filesvc", "{raw}");
    assert!(raw["services"]["kvsvc@etcd"].is_object(), "{raw}");

    // A reload of the file keeps what the store gave.
    replace_file(
        &a.t.path("routing.yaml"),
        &routing("    g: { rule: \"PathPrefix(`/g`)\", service: kvsvc@etcd }\n"),
    );
    a.wait_for("/g", CONVERGE, from("kv")).await;
    a.wait_for("/kv", Duration::ZERO, |r| {
        r.body.contains("\nx-from-file: yes\n")
    })
    .await;
    a.wait_for("/own", Duration::ZERO, from("kv")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_a_client_certificate() {
    let one = echo_upstream("one").await;
    let certs = tempfile::tempdir().unwrap();
    let ca = crate::certs::TestCa::new("etcd test CA");
    let tls = EtcdTls {
        ca: ca.write_ca(certs.path(), "ca.pem"),
        server: ca.server(certs.path(), "server", &["127.0.0.1"]),
        client: ca.client(certs.path(), "client", "wasmgate"),
    };
    let mut etcd = Etcd::with_tls(Some(&tls));
    etcd.start().await;
    etcd.put(&refs(&route("r1", "/one", "one", one))).await;
    let providers = format!(
        "  etcd:\n    endpoints: [\"{}\"]\n    tls: {{ ca: \"{}\", cert: \"{}\", key: \"{}\" }}\n",
        etcd.endpoint(),
        tls.ca.display(),
        tls.client.cert.display(),
        tls.client.key.display()
    );
    let a = Replica::start("wasmtime", &providers).await;
    a.wait_for("/one", CONVERGE, from("one")).await;

    // Without the client certificate etcd refuses the connection: nothing is read.
    let dir = write_files(&[(
        "wasmgate.yaml",
        &format!(
            "entryPoints:\n  web: {{ address: \"127.0.0.1:0\" }}\nproviders:\n  etcd:\n    endpoints: [\"{}\"]\n    tls: {{ ca: \"{}\" }}\n",
            etcd.endpoint(),
            tls.ca.display()
        ),
    )]);
    let (code, out, err) = validate(dir.path().join("wasmgate.yaml"), Some("etcd")).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("reading the store"), "{err}");
}

/// The gateway's side alone, without a store: what a provider's reads do to the snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_reads_replace_its_routing_and_bad_ones_are_refused() {
    let one = echo_upstream("one").await;
    let two = echo_upstream("two").await;
    // Configured but never started: reads are handed to the gateway by the test.
    let t = start(&[(
        "wasmgate.yaml",
        "entryPoints:\n  web: { address: \"127.0.0.1:0\" }\nproviders:\n  etcd: {}\n",
    )])
    .await;
    let gw = t.gateway.clone();
    let apply = move |pairs: Vec<(String, String)>| {
        let gw = gw.clone();
        async move {
            tokio::task::spawn_blocking(move || gw.apply_kv("etcd", "traefik", pairs))
                .await
                .unwrap()
        }
    };
    assert_eq!(send(get(t.url("/one"))).await.status, 404);
    let g1 = apply(route("r1", "/one", "one", one)).await.unwrap();
    assert_eq!(g1, Some(2));
    assert!(from("one")(&send(get(t.url("/one"))).await));
    // The same read again (a reconnect) rebuilds nothing.
    assert_eq!(apply(route("r1", "/one", "one", one)).await.unwrap(), None);
    assert_eq!(t.gateway.generation(), 2);

    // A read replaces the provider's whole routing: r1 is gone, r2 serves.
    assert_eq!(
        apply(route("r2", "/two", "two", two)).await.unwrap(),
        Some(3)
    );
    assert_eq!(send(get(t.url("/one"))).await.status, 404);
    assert!(from("two")(&send(get(t.url("/two"))).await));

    // Refused reads, the mapping's and the snapshot's: r2 keeps serving, generation 3.
    let mut bad = route("r2", "/two", "two", two);
    bad.push((
        "traefik/http/services/two/loadBalancer/passHostHeader".into(),
        "maybe".into(),
    ));
    let e = apply(bad).await.unwrap_err();
    assert_eq!(
        e.0[0].file.to_str(),
        Some("etcd:traefik/http/services/two/loadBalancer/passHostHeader"),
        "{e}"
    );
    let mut bad = route("r2", "/two", "two", two);
    bad[0].1 = "PathPrefix(`/two`) &&".into();
    let e = apply(bad).await.unwrap_err();
    assert!(
        e.to_string()
            .starts_with("etcd:traefik/http/routers/r2/rule: router \"r2@etcd\""),
        "{e}"
    );
    assert_eq!(t.gateway.generation(), 3);
    assert_eq!(t.gateway.reloads().borrow().rejected, 2);
    assert!(from("two")(&send(get(t.url("/two"))).await));
}
