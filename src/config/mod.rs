//! Configuration: the install file, the routing file, and errors that say where.
//!
//! Loading has two stages. Parsing ([`load`], [`load_routing`]) turns YAML into
//! the typed structs of [`types`], rejecting unknown fields and bad values with
//! the parser's line and column. Resolving (in [`crate::snapshot`]) checks the
//! references between routers, middlewares, services and plugins; its errors
//! carry a config path that [`locate::Locator`] turns into a line.

pub mod check;
pub mod duration;
pub mod error;
pub mod locate;
pub mod tls;
pub mod types;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub use error::{ConfigError, ConfigErrors};
pub use types::*;

/// The install file, parsed, with where its routing configuration lives.
#[derive(Debug)]
pub struct LoadedConfig {
    /// The install file's path.
    pub file: PathBuf,
    /// Its contents.
    pub config: StaticConfig,
    /// The routing file when the file provider is used.
    pub routing_file: Option<PathBuf>,
}

impl LoadedConfig {
    /// The directory relative paths in the install file are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }
}

/// Routing configuration and the file (and text) it came from.
#[derive(Debug, Clone)]
pub struct RoutingSource {
    /// The file it was read from.
    pub file: PathBuf,
    /// The file's text, kept to locate later errors.
    pub text: String,
    /// The `http` section; under `http.` in config paths.
    pub http: HttpConfig,
    /// The `tls` section; under `tls.` in config paths.
    pub tls: TlsConfig,
}

impl RoutingSource {
    /// Adds line and column to errors that point into this source.
    pub fn locate(&self, mut errors: ConfigErrors) -> ConfigErrors {
        let locator = locate::Locator::new(&self.text);
        for e in errors.0.iter_mut().filter(|e| e.file == self.file) {
            if e.position.is_none() {
                e.position = locator.position(&e.path);
            }
        }
        errors
    }
}

fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::at(path, "", format!("cannot read file: {e}")).into())
}

/// Parses YAML text into `T`, with the parser's position and the config path on failure.
pub fn parse_yaml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    // An empty file is an empty configuration, not an error.
    let text = if text.trim().is_empty() { "{}" } else { text };
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let position = inner.location().map(|l| (l.line(), l.column()));
        let mut message = inner.to_string();
        // serde_yaml appends " at line L column C"; the position is shown in front instead.
        if let Some(cut) = message.find(" at line ") {
            message.truncate(cut);
        }
        // ...and may prefix the path, which is shown separately.
        if let Some((prefix, rest)) = message.split_once(": ") {
            if !prefix.is_empty() && !prefix.contains(' ') && path.starts_with(prefix) {
                message = rest.to_string();
            }
        }
        ConfigError {
            file: file.to_path_buf(),
            position,
            path: if path == "." { String::new() } else { path },
            message,
        }
    })
}

/// Reads and parses the install file.
pub fn load(file: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let text = read(file)?;
    let mut config: StaticConfig = parse_yaml(file, &text)?;
    let mut errors = check::check_static(file, &config);
    if let Some(tls) = config.providers.etcd.as_ref().and_then(|e| e.tls.as_ref()) {
        // The etcd client always checks the server's certificate; refused here, not at every
        // connection attempt.
        if tls.insecure_skip_verify {
            errors.push(ConfigError::at(
                file,
                "providers.etcd.tls.insecureSkipVerify",
                "not supported: the etcd client always checks the server's certificate; give \
                 tls.ca (the CA that signed it) instead",
            ));
        }
        if tls.cert.is_some() != tls.key.is_some() {
            errors.push(ConfigError::at(
                file,
                "providers.etcd.tls",
                "cert and key go together: give both or neither",
            ));
        }
    }
    add_internal_entry_point(&mut config);
    if !errors.is_empty() {
        locate::Locator::new(&text).fill(&mut errors);
        return Err(ConfigErrors(errors));
    }
    let base = file.parent().unwrap_or(Path::new("."));
    let routing_file = config
        .providers
        .file
        .as_ref()
        .map(|f| base.join(&f.filename));
    let loaded = LoadedConfig {
        file: file.to_path_buf(),
        config,
        routing_file,
    };
    let inline = match (&loaded.config.http, &loaded.config.tls) {
        (Some(_), _) => Some("http"),
        (None, Some(_)) => Some("tls"),
        (None, None) => None,
    };
    if let (Some(section), Some(_)) = (inline, &loaded.routing_file) {
        let mut e = ConfigError::at(
            file,
            section,
            "routing is configured both inline and through providers.file; use one of them",
        );
        e.position = locate::Locator::new(&text).position(section);
        return Err(e.into());
    }
    Ok(loaded)
}

/// `ping` and `metrics` use Traefik's internal entry point unless they name another, `api`
/// always; when it is not declared it listens on `:8080`, as in Traefik.
fn add_internal_entry_point(config: &mut StaticConfig) {
    let wanted = [
        config.ping.as_ref().map(|p| p.entry_point.as_deref()),
        config
            .metrics
            .as_ref()
            .and_then(|m| m.prometheus.as_ref())
            .map(|p| p.entry_point.as_deref()),
    ];
    if config.api.is_some()
        || wanted
            .iter()
            .any(|w| matches!(w, Some(None) | Some(Some(INTERNAL_ENTRY_POINT))))
    {
        config
            .entry_points
            .entry(INTERNAL_ENTRY_POINT.to_string())
            .or_insert_with(|| EntryPointConfig {
                address: ":8080".into(),
                transport: Default::default(),
                http: Default::default(),
                forwarded_headers: Default::default(),
                http2: Default::default(),
            });
    }
}

/// Reads the routing configuration: the file provider's file, or the install file's `http` section.
pub fn load_routing(loaded: &LoadedConfig) -> Result<RoutingSource, ConfigErrors> {
    match &loaded.routing_file {
        Some(path) => {
            let text = read(path)?;
            let parsed: RoutingFile = parse_yaml(path, &text)?;
            Ok(RoutingSource {
                file: path.clone(),
                text,
                http: parsed.http,
                tls: parsed.tls,
            })
        }
        None => Ok(RoutingSource {
            file: loaded.file.clone(),
            text: read(&loaded.file)?,
            http: loaded.config.http.clone().unwrap_or_default(),
            tls: loaded.config.tls.clone().unwrap_or_default(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_names_path_and_line() {
        let text = "entryPoints:\n  web:\n    address: \"127.0.0.1:1\"\n    adress: x\n";
        let e = parse_yaml::<StaticConfig>(Path::new("c.yaml"), text).unwrap_err();
        assert_eq!(e.path, "entryPoints.web.adress");
        assert_eq!(e.position.map(|p| p.0), Some(4));
        assert!(
            e.message.contains("unknown field `adress`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn middleware_kinds_and_plugin_config() {
        let text = r#"
http:
  middlewares:
    a: { headers: { customRequestHeaders: { X-A: "1" } } }
    b: { stripPrefix: { prefixes: ["/api"] } }
    c: { chain: { middlewares: [a, b] } }
    d: { plugin: { example: { headers: { Foo: Bar } } } }
"#;
        let c: StaticConfig = parse_yaml(Path::new("c.yaml"), text).unwrap();
        let m = &c.http.unwrap().middlewares;
        assert!(matches!(m["a"].kind(), Ok(MiddlewareKind::Headers(_))));
        assert!(matches!(m["b"].kind(), Ok(MiddlewareKind::StripPrefix(_))));
        assert!(matches!(m["c"].kind(), Ok(MiddlewareKind::Chain(_))));
        match m["d"].kind() {
            Ok(MiddlewareKind::Plugin(p)) => {
                assert_eq!(p["example"], serde_json::json!({"headers": {"Foo": "Bar"}}))
            }
            other => panic!("{other:?}"),
        }
        match (MiddlewareConfig::default().kind(), m["a"].chain.is_none()) {
            (Err(e), true) => assert!(e.contains("exactly one kind"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failure_policies_on_declarations_and_plugin_middlewares() {
        let text = r#"
plugins:
  p: { path: p.wasm, failurePolicy: reload, logLevel: DEBUG }
  q: { path: q.wasm, logLevel: off }
http:
  middlewares:
    a: { plugin: { p: {} }, failurePolicy: open }
    b: { headers: { customRequestHeaders: { X-A: "1" } }, failurePolicy: open }
"#;
        let c: StaticConfig = parse_yaml(Path::new("c.yaml"), text).unwrap();
        assert_eq!(
            c.plugins["p"].failure_policy,
            Some(FailurePolicyChoice::Reload)
        );
        // logLevel in Traefik's spelling or lower case.
        assert_eq!(c.plugins["p"].log_level, Some(PluginLogLevel::Debug));
        assert_eq!(c.plugins["q"].log_level, Some(PluginLogLevel::Off));
        let m = &c.http.unwrap().middlewares;
        assert_eq!(m["a"].failure_policy, Some(FailurePolicyChoice::Open));
        assert!(matches!(m["a"].kind(), Ok(MiddlewareKind::Plugin(_))));
        match m["b"].kind() {
            Err(e) => assert!(e.contains("plugin middlewares only"), "{e}"),
            other => panic!("{other:?}"),
        }
        // An unknown policy names the line and the ones that exist.
        let text = "plugins:\n  p:\n    path: p.wasm\n    failurePolicy: ignore\n";
        let e = parse_yaml::<StaticConfig>(Path::new("c.yaml"), text).unwrap_err();
        assert_eq!(e.position.map(|p| p.0), Some(4));
        assert!(
            e.message.contains("closed") && e.message.contains("reload"),
            "{}",
            e.message
        );
    }

    #[test]
    fn kv_providers_with_traefiks_option_names() {
        let text = "providers:\n  etcd:\n    endpoints: [\"10.0.0.1:2379\"]\n    rootKey: edge\n    username: u\n    password: p\n    tls: { ca: ca.pem, cert: c.pem, key: k.pem }\n  redis: { endpoints: [\"r:6379\"], password: p, db: 2 }\n";
        let c: StaticConfig = parse_yaml(Path::new("c.yaml"), text).unwrap();
        let etcd = c.providers.etcd.unwrap();
        assert_eq!(etcd.endpoints, ["10.0.0.1:2379"]);
        assert_eq!(etcd.root_key, "edge");
        assert_eq!(etcd.tls.unwrap().key.as_deref(), Some("k.pem"));
        let redis = c.providers.redis.unwrap();
        assert_eq!((redis.root_key.as_str(), redis.db), ("traefik", 2));
        let c: StaticConfig = parse_yaml(Path::new("c.yaml"), "providers:\n  etcd: {}\n").unwrap();
        assert_eq!(c.providers.etcd.unwrap().endpoints, ["127.0.0.1:2379"]);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(
            &file,
            "providers:\n  etcd:\n    tls:\n      insecureSkipVerify: true\n      cert: c.pem\n",
        )
        .unwrap();
        let e = load(&file).unwrap_err().0;
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].path, "providers.etcd.tls.insecureSkipVerify");
        assert_eq!(e[0].position.map(|p| p.0), Some(4));
        assert!(e[1].message.contains("cert and key"), "{}", e[1]);
    }

    #[test]
    fn cache_section() {
        let text = "cache:\n  dir: c\n  maxSizeBytes: 1048576\n";
        let c: StaticConfig = parse_yaml(Path::new("c.yaml"), text).unwrap();
        assert_eq!(c.cache.max_size_bytes, Some(1 << 20));
        assert!(c.cache.enabled);
        let c: StaticConfig = parse_yaml(Path::new("c.yaml"), "cache: {}\n").unwrap();
        assert_eq!(c.cache.max_size_bytes, None);
    }

    #[test]
    fn unknown_middleware_kind_lists_known_ones() {
        let text = "http:\n  middlewares:\n    a:\n      rateLimit: {}\n";
        let e = parse_yaml::<StaticConfig>(Path::new("c.yaml"), text).unwrap_err();
        assert!(
            e.message.contains("unknown field `rateLimit`"),
            "{}",
            e.message
        );
        assert!(e.message.contains("stripPrefix"), "{}", e.message);
        assert_eq!(e.position.map(|p| p.0), Some(4));
    }
}
