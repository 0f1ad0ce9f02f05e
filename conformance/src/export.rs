//! `wasmgate conformance guests --out DIR`: the guests as `.wasm` files and configurations
//! that wire them into wasmgate, Traefik 3 and Envoy, so another host can be tested with
//! `wasmgate conformance --target`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Map, Value};

use crate::case::{guest, Abi, Case};
use crate::runner::{
    file_stem, install_file, middleware_name, write_guests, Slot, SlotLink, Slots, ENGINES,
    ROUTE_HEADER,
};

/// What to write.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Where the suite's upstream will listen (`wasmgate conformance --target --upstream`).
    pub upstream: SocketAddr,
    /// The entry point of wasmgate and Traefik, `HOST:PORT`.
    pub listen: SocketAddr,
    /// The engines `wasmgate.yaml` declares each guest on.
    pub engines: Vec<String>,
    /// Envoy's first listener port: slot `mN` listens on `base_port + N`.
    pub base_port: u16,
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct Exported {
    /// Every file, in writing order.
    pub files: Vec<PathBuf>,
    /// Slots a host cannot express, as readable lines.
    pub skipped: Vec<String>,
}

/// Writes every guest of `universe` (compiled from WAT) and the configurations into `out`,
/// numbering slots exactly as a `--target` run over the same cases does.
pub fn export(out: &Path, universe: &[Case], opts: &ExportOptions) -> anyhow::Result<Exported> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // The configurations name the modules by absolute path, so hosts can run from anywhere.
    let out = out
        .canonicalize()
        .with_context(|| format!("resolving {}", out.display()))?;
    let slots = Slots::new(universe);
    let mut done = Exported::default();
    let guests = write_guests(&out, &slots.guests())?;
    for g in &guests {
        done.files.push(out.join(format!("{}.wasm", file_stem(g))));
    }

    let yaml = install_file(
        &out,
        &guests,
        &opts.engines,
        &slots,
        opts.upstream,
        &opts.listen.to_string(),
    )?;
    // Metrics on the suite's own entry point, for `--target ... --metrics-url .../metrics`.
    let yaml = format!("{yaml}metrics:\n  prometheus:\n    entryPoint: web\n");
    write(&out.join("wasmgate.yaml"), &yaml, &mut done)?;

    // Foreign hosts have no engine choice: the first engine's slots (m0..m{n-1}) stand for all.
    let first = vec![ENGINES[0].to_string()];
    let foreign: Vec<(usize, Slot)> = slots.on(&first);
    traefik(&out, &foreign, opts, &mut done)?;
    envoy(&out, &foreign, opts, &mut done)?;
    Ok(done)
}

fn write(path: &Path, text: &str, done: &mut Exported) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    done.files.push(path.to_path_buf());
    Ok(())
}

/// The ABI of a slot's plugins (a chain's are all of one ABI).
fn abi_of(slot: &Slot) -> Option<Abi> {
    guest(&slot.links.first()?.guest).map(|g| g.abi)
}

/// `traefik/`: the static file, the dynamic file and one local plugin per http-wasm guest.
fn traefik(
    out: &Path,
    slots: &[(usize, Slot)],
    opts: &ExportOptions,
    done: &mut Exported,
) -> anyhow::Result<()> {
    let dir = out.join("traefik");
    let mut local_plugins = Map::new();
    let mut routers = Map::new();
    let mut middlewares = Map::new();
    for (i, s) in slots {
        if abi_of(s) != Some(Abi::HttpWasm) {
            continue;
        }
        // Traefik hands a plugin its settings as a JSON object; a bare string has no form.
        if let Some(l) = s.links.iter().find(|l| !l.config.is_object()) {
            done.skipped.push(format!(
                "traefik: m{i} ({}) has a non-object config {}",
                l.guest, l.config
            ));
            continue;
        }
        let mut names = Vec::new();
        for (l, link) in s.links.iter().enumerate() {
            if !local_plugins.contains_key(&link.guest) {
                let src = dir.join("plugins-local/src").join(&link.guest);
                let manifest = json!({
                    "displayName": format!("wasmgate conformance {}", link.guest),
                    "type": "middleware",
                    "runtime": "wasm",
                    "wasmPath": "plugin.wasm",
                    "summary": "A guest of the wasmgate conformance suite",
                    "testData": {},
                });
                write(
                    &src.join(".traefik.yml"),
                    &serde_yaml::to_string(&manifest)?,
                    done,
                )?;
                let wasm = out.join(format!("{}.wasm", file_stem(&link.guest)));
                let to = src.join("plugin.wasm");
                std::fs::copy(&wasm, &to).with_context(|| format!("writing {}", to.display()))?;
                done.files.push(to);
                local_plugins.insert(link.guest.clone(), json!({ "moduleName": link.guest }));
            }
            let m = middleware_name(*i, l);
            let mut plugin = Map::new();
            plugin.insert(link.guest.clone(), link.config.clone());
            middlewares.insert(m.clone(), json!({ "plugin": Value::Object(plugin) }));
            names.push(m);
        }
        routers.insert(
            format!("r{i}"),
            json!({
                "rule": format!("Header(`{ROUTE_HEADER}`, `m{i}`)"),
                "entryPoints": ["web"],
                "middlewares": names,
                "service": "upstream",
            }),
        );
    }
    let dynamic = json!({
        "http": {
            "routers": Value::Object(routers),
            "middlewares": Value::Object(middlewares),
            "services": {
                "upstream": {
                    "loadBalancer": {"servers": [{"url": format!("http://{}", opts.upstream)}]}
                }
            },
        }
    });
    let dynamic_path = dir.join("dynamic.yml");
    write(&dynamic_path, &serde_yaml::to_string(&dynamic)?, done)?;
    let stat = json!({
        "entryPoints": {"web": {"address": opts.listen.to_string()}},
        "providers": {"file": {"filename": dynamic_path.display().to_string()}},
        "experimental": {"localPlugins": Value::Object(local_plugins)},
    });
    write(
        &dir.join("traefik.yml"),
        &serde_yaml::to_string(&stat)?,
        done,
    )
}

/// `envoy.yaml`: one listener per proxy-wasm slot, on `base_port + N` for slot `mN`, each
/// with its own Wasm filter (one per plugin of a chain, in order), all routing to the upstream. Envoy's HTTP filter chain belongs
/// to a listener's connection manager, so a listener per slot is what picks the middleware.
fn envoy(
    out: &Path,
    slots: &[(usize, Slot)],
    opts: &ExportOptions,
    done: &mut Exported,
) -> anyhow::Result<()> {
    let mut listeners = Vec::new();
    for (i, s) in slots {
        if abi_of(s) != Some(Abi::ProxyWasm) {
            continue;
        }
        let port = u16::try_from(usize::from(opts.base_port) + i)
            .ok()
            .with_context(|| format!("slot m{i} is past the last port from {}", opts.base_port))?;
        let mut http_filters = Vec::new();
        for (l, link) in s.links.iter().enumerate() {
            http_filters.push(json!({
                "name": "envoy.filters.http.wasm",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": envoy_plugin(out, *i, l, link, done),
                },
            }));
        }
        http_filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
            },
        }));
        listeners.push(json!({
            "name": format!("m{i}"),
            "address": {"socket_address": {
                "address": opts.listen.ip().to_string(),
                "port_value": port,
            }},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": format!("m{i}"),
                    "codec_type": "AUTO",
                    "route_config": {
                        "name": format!("m{i}"),
                        "virtual_hosts": [{
                            "name": "conformance",
                            "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}],
                        }],
                    },
                    "http_filters": http_filters,
                },
            }]}],
        }));
    }
    let doc = json!({
        "static_resources": {
            "listeners": listeners,
            "clusters": [{
                "name": "upstream",
                "type": "STATIC",
                "connect_timeout": "5s",
                "load_assignment": {
                    "cluster_name": "upstream",
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                        "address": opts.upstream.ip().to_string(),
                        "port_value": opts.upstream.port(),
                    }}}}]}],
                },
            }],
        }
    });
    write(&out.join("envoy.yaml"), &serde_yaml::to_string(&doc)?, done)
}

/// The Wasm filter configuration (`PluginConfig`) of middleware `link` of slot `idx`.
fn envoy_plugin(
    out: &Path,
    idx: usize,
    link_idx: usize,
    link: &SlotLink,
    done: &mut Exported,
) -> Value {
    let configuration = match &link.config {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let filename = out
        .join(format!("{}.wasm", file_stem(&link.guest)))
        .display()
        .to_string();
    let mut plugin_config = json!({
        "name": middleware_name(idx, link_idx),
        "configuration": {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": configuration,
        },
        "vm_config": {
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": filename}},
        },
    });
    if let Some(root_id) = guest(&link.guest)
        .and_then(|g| g.sdk.as_ref())
        .and_then(|x| x.root_id)
    {
        plugin_config["root_id"] = json!(root_id);
    }
    // A case's plugin settings: Envoy has a root id, a VM id and a VM configuration; log
    // levels and limits are Envoy-wide (command line, buffer limits), so they are not written.
    if let Some(set) = &link.settings {
        if let Some(r) = &set.root_id {
            plugin_config["root_id"] = json!(r);
        }
        if let Some(v) = &set.vm_id {
            plugin_config["vm_config"]["vm_id"] = json!(v);
        }
        if let Some(v) = &set.vm_config {
            plugin_config["vm_config"]["configuration"] = json!({
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": v,
            });
        }
        if set.log_level.is_some() || !set.limits.is_empty() {
            done.skipped.push(format!(
                "envoy: {} ({}) sets a log level or limits, which Envoy sets for the whole proxy",
                middleware_name(idx, link_idx),
                link.guest
            ));
        }
    }
    plugin_config
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::builtin_cases;

    #[test]
    fn writes_every_guest_and_config_with_matching_slots() {
        let dir = tempfile::tempdir().unwrap();
        // As `guests --out` without `--sdk`: the SDK-built guests need their toolchains.
        let cases: Vec<Case> = builtin_cases()
            .unwrap()
            .into_iter()
            .filter(|c| !c.is_sdk())
            .collect();
        let opts = ExportOptions {
            upstream: "127.0.0.1:9099".parse().unwrap(),
            listen: "127.0.0.1:8080".parse().unwrap(),
            engines: vec!["wasmtime".into()],
            base_port: 10000,
        };
        let done = export(dir.path(), &cases, &opts).unwrap();
        let root = dir.path().canonicalize().unwrap();
        for f in [
            "http_wasm.wasm",
            "proxy_wasm-0_1_0.wasm",
            "proxy_wasm-0_2_1.wasm",
            "wasmgate.yaml",
            "envoy.yaml",
            "traefik/traefik.yml",
            "traefik/dynamic.yml",
            "traefik/plugins-local/src/http_wasm/.traefik.yml",
            "traefik/plugins-local/src/http_wasm/plugin.wasm",
        ] {
            assert!(done.files.contains(&root.join(f)), "{f}: {:?}", done.files);
        }
        assert_eq!(done.skipped.len(), 1, "{:?}", done.skipped);
        assert!(done.skipped[0].contains("\"raw text\""));

        let slots = Slots::new(&cases);
        let pw = cases
            .iter()
            .find(|c| c.name == "pw_plugin_configuration@0.2.1")
            .unwrap();
        let i = slots.index(pw, "wasmtime").unwrap();
        let envoy: Value =
            serde_yaml::from_str(&std::fs::read_to_string(root.join("envoy.yaml")).unwrap())
                .unwrap();
        let listener = envoy["static_resources"]["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == format!("m{i}"))
            .unwrap();
        assert_eq!(
            listener["address"]["socket_address"]["port_value"],
            10000 + i
        );
        let hcm = &listener["filter_chains"][0]["filters"][0]["typed_config"];
        let wasm = &hcm["http_filters"][0]["typed_config"]["config"];
        assert_eq!(wasm["configuration"]["value"], "key=value");
        assert_eq!(wasm["vm_config"]["runtime"], "envoy.wasm.runtime.v8");

        let hw = cases.iter().find(|c| c.name == "get_config_json").unwrap();
        let i = slots.index(hw, "wasmtime").unwrap();
        let dynamic: Value = serde_yaml::from_str(
            &std::fs::read_to_string(root.join("traefik/dynamic.yml")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            dynamic["http"]["middlewares"][format!("m{i}")]["plugin"]["http_wasm"],
            json!({"greeting": "hello"})
        );
        assert_eq!(
            dynamic["http"]["routers"][format!("r{i}")]["rule"],
            format!("Header(`x-conformance-route`, `m{i}`)")
        );
        // Engine-major: the second engine's slots follow all of the first's.
        let per_engine = slots.on(&["wasmtime".to_string()]).len();
        assert_eq!(slots.index(hw, "wasmer"), Some(i + per_engine));
    }
}
