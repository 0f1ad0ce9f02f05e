//! `wasmgate plugin inspect FILE.wasm`: what a module is to wasmgate before it is declared —
//! its ABI and version, what it imports and exports, which imports wasmgate does not provide,
//! the memory it asks for, its WASI use; with an engine, whether it loads there and how long
//! compiling it takes.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use wasmgate_abi::engines::{ImportKind, ModuleInfo};
use wasmgate_abi::plugin::{detect_abi, AbiChoice, AbiKind, EngineKind};
use wasmgate_abi::{Engines, Plugin, PluginOptions};

/// WASI's two module names; wasmgate provides both.
const WASI_MODULES: [&str; 2] = ["wasi_snapshot_preview1", "wasi_unstable"];

/// One import and whether wasmgate's host provides it.
#[derive(Debug, Serialize)]
pub struct ImportReport {
    /// `module.name`.
    pub module: String,
    /// The field.
    pub name: String,
    /// What the module asks for (`func (i32) -> i64`, `memory`, ...).
    pub kind: String,
    /// The host has it with this signature.
    pub provided: bool,
    /// When not provided: what the host has under that name, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_has: Option<String>,
}

/// One export.
#[derive(Debug, Serialize)]
pub struct ExportReport {
    /// Its name.
    pub name: String,
    /// What it is.
    pub kind: String,
}

/// Whether and how fast the module loads on one engine.
#[derive(Debug, Serialize)]
pub struct CompileReport {
    /// The engine.
    pub engine: String,
    /// Compile plus the ABI's checks, in milliseconds (no disk cache).
    pub millis: f64,
    /// Why it does not load there, if it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything `plugin inspect` says about a module.
#[derive(Debug, Serialize)]
pub struct InspectReport {
    /// The file.
    pub file: String,
    /// Its size in bytes.
    pub bytes: usize,
    /// `http-wasm` or `proxy-wasm`, when one could be detected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abi: Option<String>,
    /// proxy-wasm: the ABI version its marker export names (`0.2.1`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abi_version: Option<String>,
    /// Why no ABI or version could be told, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abi_error: Option<String>,
    /// Initial linear memory, in 64 KiB pages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_min_pages: Option<u64>,
    /// The module's own memory maximum, in pages (wasmgate caps it at `maxMemoryBytes` too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_max_pages: Option<u64>,
    /// The module has a core start section (run by wasmgate right after instantiation).
    pub start_section: bool,
    /// The WASI functions it imports.
    pub wasi: Vec<String>,
    /// Every import.
    pub imports: Vec<ImportReport>,
    /// Every export.
    pub exports: Vec<ExportReport>,
    /// Imports wasmgate does not provide (`module.name`): the module would not load.
    pub not_provided: Vec<String>,
    /// With `--engine`: the load there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compile: Option<CompileReport>,
}

impl InspectReport {
    /// True when wasmgate can run the module: an ABI was told, every import is provided, and
    /// (when an engine was asked for) it loaded there.
    pub fn loads(&self) -> bool {
        self.abi_error.is_none()
            && self.not_provided.is_empty()
            && self.compile.as_ref().is_none_or(|c| c.error.is_none())
    }

    /// The report for a terminal.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(o, "file: {} ({} bytes)", self.file, self.bytes);
        match (&self.abi, &self.abi_version, &self.abi_error) {
            (_, _, Some(e)) => {
                let _ = writeln!(o, "abi: unknown: {e}");
            }
            (Some(a), Some(v), None) => {
                let _ = writeln!(o, "abi: {a} {v}");
            }
            (Some(a), None, None) => {
                let _ = writeln!(o, "abi: {a}");
            }
            (None, _, None) => {}
        }
        let pages = |p: u64| format!("{p} pages ({} KiB)", p * 64);
        let _ = writeln!(
            o,
            "memory: initial {}, maximum {}",
            self.memory_min_pages
                .map(pages)
                .unwrap_or_else(|| "none (no memory)".into()),
            self.memory_max_pages
                .map(pages)
                .unwrap_or_else(|| "none (wasmgate's maxMemoryBytes applies)".into())
        );
        let _ = writeln!(
            o,
            "start section: {}",
            if self.start_section { "yes" } else { "no" }
        );
        if self.wasi.is_empty() {
            let _ = writeln!(o, "wasi: not used");
        } else {
            let _ = writeln!(o, "wasi: {}", self.wasi.join(", "));
        }
        let _ = writeln!(o, "imports ({}):", self.imports.len());
        for i in &self.imports {
            let mark = match (i.provided, &i.host_has) {
                (true, _) => String::new(),
                (false, Some(h)) => format!("  NOT PROVIDED (wasmgate has {h})"),
                (false, None) => "  NOT PROVIDED".into(),
            };
            let _ = writeln!(o, "  {}.{}: {}{mark}", i.module, i.name, i.kind);
        }
        let _ = writeln!(o, "exports ({}):", self.exports.len());
        for e in &self.exports {
            let _ = writeln!(o, "  {}: {}", e.name, e.kind);
        }
        if let Some(c) = &self.compile {
            match &c.error {
                None => {
                    let _ = writeln!(o, "{}: loads, compiled in {:.1} ms", c.engine, c.millis);
                }
                Some(e) => {
                    let _ = writeln!(o, "{}: does not load: {e}", c.engine);
                }
            }
        }
        if !self.not_provided.is_empty() {
            let _ = writeln!(
                o,
                "wasmgate does not provide: {}",
                self.not_provided.join(", ")
            );
        }
        o
    }
}

/// Inspects the module in `file`; with `engine`, also loads it there. `Err`: the file could not
/// be read or is not a WebAssembly module.
pub fn inspect(
    file: &Path,
    abi: AbiChoice,
    engine: Option<EngineKind>,
) -> anyhow::Result<InspectReport> {
    let wasm =
        std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let info = ModuleInfo::parse(&wasm).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    let detected = match abi {
        AbiChoice::Auto => detect_abi(&info).map_err(|e| e.to_string()),
        AbiChoice::HttpWasm => Ok(AbiKind::HttpWasm),
        AbiChoice::ProxyWasm => Ok(AbiKind::ProxyWasm),
    };
    let (mut report_abi, mut version, mut abi_error, mut host) = (None, None, None, None);
    match detected {
        Ok(AbiKind::HttpWasm) => {
            report_abi = Some(AbiKind::HttpWasm.to_string());
            host = Some(wasmgate_abi::http_wasm::host_functions(&name));
        }
        Ok(AbiKind::ProxyWasm) => {
            report_abi = Some(AbiKind::ProxyWasm.to_string());
            match wasmgate_abi::proxy_wasm::detect_version(&info) {
                Ok(v) => {
                    version = Some(v.to_string());
                    host = Some(wasmgate_abi::proxy_wasm::host_functions(&name, v));
                }
                Err(e) => abi_error = Some(e.to_string()),
            }
        }
        Err(e) => abi_error = Some(e),
    }
    let missing = host
        .as_ref()
        .map(|h| info.missing_imports(h))
        .unwrap_or_default();
    let imports: Vec<ImportReport> = info
        .imports
        .iter()
        .map(|i| {
            let gap = missing
                .iter()
                .find(|m| m.module == i.module && m.name == i.name);
            ImportReport {
                module: i.module.clone(),
                name: i.name.clone(),
                kind: i.kind.to_string(),
                // Without a host table (no ABI told) nothing can be said to be provided.
                provided: host.is_some() && gap.is_none(),
                host_has: gap.and_then(|m| m.host_has.as_ref().map(|t| format!("func {t}"))),
            }
        })
        .collect();
    let not_provided = if host.is_some() {
        missing
            .iter()
            .map(|m| format!("{}.{}", m.module, m.name))
            .collect()
    } else {
        Vec::new()
    };
    let wasi = info
        .imports
        .iter()
        .filter(|i| WASI_MODULES.contains(&i.module.as_str()))
        .filter(|i| matches!(i.kind, ImportKind::Func(_)))
        .map(|i| i.name.clone())
        .collect();
    let compile = engine.map(|kind| {
        let opts = PluginOptions {
            engine: kind,
            abi,
            ..PluginOptions::default()
        };
        let engines = Engines::new(None);
        let started = Instant::now();
        let result = Plugin::load(&name, &wasm, opts, &engines);
        CompileReport {
            engine: kind.to_string(),
            millis: started.elapsed().as_secs_f64() * 1000.0,
            error: result.err().map(|e| e.to_string()),
        }
    });
    Ok(InspectReport {
        file: file.display().to_string(),
        bytes: wasm.len(),
        abi: report_abi,
        abi_version: version,
        abi_error,
        memory_min_pages: info.memory_min_pages,
        memory_max_pages: info.memory_max_pages,
        start_section: info.start.is_some(),
        wasi,
        imports,
        exports: info
            .exports
            .iter()
            .map(|e| ExportReport {
                name: e.name.clone(),
                kind: e.kind.to_string(),
            })
            .collect(),
        not_provided,
        compile,
    })
}
