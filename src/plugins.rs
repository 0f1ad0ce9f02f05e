//! Plugin declarations: wasmgate's `plugins` section and Traefik's `experimental.localPlugins`.
//!
//! Declared once, read once: each plugin's .wasm file is found and read here,
//! and every middleware that names the plugin shares it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use wasmgate_abi::Middleware;

use crate::config::{AbiChoice, ConfigError, ConfigErrors, EngineChoice, LoadedConfig};

/// A declared plugin whose module has been read.
#[derive(Debug, Clone)]
pub struct PluginSource {
    /// The name middlewares use for it.
    pub name: String,
    /// Where its module was read from.
    pub wasm_path: PathBuf,
    /// The engine that runs it.
    pub engine: EngineChoice,
    /// The ABI it speaks.
    pub abi: AbiChoice,
    /// The module's bytes.
    pub wasm: Arc<Vec<u8>>,
}

/// Every declared plugin, by name.
#[derive(Debug, Default)]
pub struct PluginCatalog {
    plugins: BTreeMap<String, PluginSource>,
}

/// The part of Traefik's `.traefik.yml` manifest wasmgate reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TraefikManifest {
    #[serde(default)]
    runtime: Option<String>,
    #[serde(default)]
    wasm_path: Option<String>,
}

/// What a plugin middleware's configuration becomes for the guest: a plain string as its raw
/// bytes, anything else as JSON (Traefik hands http-wasm plugins their settings as JSON).
pub fn plugin_config_bytes(value: &serde_json::Value) -> Vec<u8> {
    match value {
        serde_json::Value::String(s) => s.clone().into_bytes(),
        serde_json::Value::Null => Vec::new(),
        other => other.to_string().into_bytes(),
    }
}

fn read_module(file: &Path, path: &str, wasm_path: &Path) -> Result<Arc<Vec<u8>>, ConfigError> {
    let bytes = std::fs::read(wasm_path).map_err(|e| {
        ConfigError::at(
            file,
            path,
            format!("cannot read plugin module {}: {e}", wasm_path.display()),
        )
    })?;
    if !bytes.starts_with(b"\0asm") {
        return Err(ConfigError::at(
            file,
            path,
            format!(
                "{} is not a WebAssembly module (no \\0asm header)",
                wasm_path.display()
            ),
        ));
    }
    Ok(Arc::new(bytes))
}

impl PluginCatalog {
    /// Finds and reads every declared plugin; errors name the declaration.
    pub fn load(loaded: &LoadedConfig) -> Result<PluginCatalog, ConfigErrors> {
        let base = loaded.base_dir();
        let file = &loaded.file;
        let mut plugins = BTreeMap::new();
        let mut errors = Vec::new();
        for (name, decl) in &loaded.config.plugins {
            let path = format!("plugins.{name}.path");
            let wasm_path = base.join(&decl.path);
            match read_module(file, &path, &wasm_path) {
                Ok(wasm) => {
                    plugins.insert(
                        name.clone(),
                        PluginSource {
                            name: name.clone(),
                            wasm_path,
                            engine: decl.engine,
                            abi: decl.abi,
                            wasm,
                        },
                    );
                }
                Err(e) => errors.push(e),
            }
        }
        for (name, local) in &loaded.config.experimental.local_plugins {
            let path = format!("experimental.localPlugins.{name}.moduleName");
            if plugins.contains_key(name) {
                errors.push(ConfigError::at(
                    file,
                    &path,
                    format!("plugin {name:?} is also declared under plugins"),
                ));
                continue;
            }
            let dir = base.join("plugins-local/src").join(&local.module_name);
            let manifest_path = dir.join(".traefik.yml");
            let manifest = match std::fs::read_to_string(&manifest_path) {
                Ok(text) => match serde_yaml::from_str::<TraefikManifest>(&text) {
                    Ok(m) => m,
                    Err(e) => {
                        errors.push(ConfigError::at(
                            file,
                            &path,
                            format!("{}: {e}", manifest_path.display()),
                        ));
                        continue;
                    }
                },
                Err(e) => {
                    errors.push(ConfigError::at(
                        file,
                        &path,
                        format!("cannot read {}: {e}", manifest_path.display()),
                    ));
                    continue;
                }
            };
            if manifest.runtime.as_deref().is_some_and(|r| r != "wasm") {
                errors.push(ConfigError::at(
                    file,
                    &path,
                    format!(
                        "{} declares runtime {:?}; wasmgate runs only wasm plugins (runtime: wasm)",
                        manifest_path.display(),
                        manifest.runtime.unwrap_or_default()
                    ),
                ));
                continue;
            }
            let wasm_path = dir.join(manifest.wasm_path.as_deref().unwrap_or("plugin.wasm"));
            match read_module(file, &path, &wasm_path) {
                Ok(wasm) => {
                    plugins.insert(
                        name.clone(),
                        PluginSource {
                            name: name.clone(),
                            wasm_path,
                            engine: EngineChoice::default(),
                            // Traefik's wasm plugins are http-wasm plugins.
                            abi: AbiChoice::HttpWasm,
                            wasm,
                        },
                    );
                }
                Err(e) => errors.push(e),
            }
        }
        for name in loaded.config.experimental.plugins.keys() {
            errors.push(ConfigError::at(
                file,
                format!("experimental.plugins.{name}"),
                "remote plugins are downloaded by Traefik's plugin catalog, which wasmgate does not reach; \
                 put the plugin under plugins-local and declare it in experimental.localPlugins or plugins",
            ));
        }
        if errors.is_empty() {
            Ok(PluginCatalog { plugins })
        } else {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let locator = crate::config::locate::Locator::new(&text);
            locator.fill(&mut errors);
            Err(ConfigErrors(errors))
        }
    }

    /// Names of the declared plugins.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.plugins.keys().map(String::as_str)
    }

    /// The plugin called `name`.
    pub fn get(&self, name: &str) -> Option<&PluginSource> {
        self.plugins.get(name)
    }

    /// A middleware running plugin `name` with `config`.
    pub fn middleware(
        &self,
        name: &str,
        config: &serde_json::Value,
    ) -> Result<Arc<dyn Middleware>, String> {
        let plugin = self
            .plugins
            .get(name)
            .ok_or_else(|| crate::config::error::missing("plugin", name, self.plugins.keys()))?;
        let _config = plugin_config_bytes(config);
        Err(format!(
            "plugin {:?} ({}) cannot run: this build of wasmgate has no WebAssembly engine yet \
             (see the support table in README.md)",
            plugin.name,
            plugin.wasm_path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_bytes() {
        assert_eq!(
            plugin_config_bytes(&serde_json::json!({"headers": {"Foo": "Bar"}})),
            br#"{"headers":{"Foo":"Bar"}}"#.to_vec()
        );
        assert_eq!(
            plugin_config_bytes(&serde_json::json!("raw text")),
            b"raw text".to_vec()
        );
    }
}
