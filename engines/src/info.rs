//! Engine-independent module inspection with `wasmparser`.

use std::fmt;

use crate::{EngineError, FuncType, HostFunctions, ValType};

/// What an import or export is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportKind {
    /// A function with number-typed signature.
    Func(FuncType),
    /// A function whose signature uses types outside [`ValType`] (v128, references).
    UnsupportedFunc(String),
    /// A memory.
    Memory,
    /// A table.
    Table,
    /// A global.
    Global,
    /// A tag (exception handling).
    Tag,
}

/// Kinds of exports (same shape as imports).
pub type ExportKind = ImportKind;

impl fmt::Display for ImportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportKind::Func(t) => write!(f, "func {t}"),
            ImportKind::UnsupportedFunc(s) => write!(f, "func {s}"),
            ImportKind::Memory => f.write_str("memory"),
            ImportKind::Table => f.write_str("table"),
            ImportKind::Global => f.write_str("global"),
            ImportKind::Tag => f.write_str("tag"),
        }
    }
}

/// One import of a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// Module name.
    pub module: String,
    /// Field name.
    pub name: String,
    /// What is imported.
    pub kind: ImportKind,
}

/// One export of a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Export name.
    pub name: String,
    /// What is exported.
    pub kind: ExportKind,
}

/// An import the host does not provide, naming module and function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingImport {
    /// Import module name.
    pub module: String,
    /// Import field name.
    pub name: String,
    /// What the module expects.
    pub kind: ImportKind,
    /// The signature the host offers under that name, if any (a mismatch).
    pub host_has: Option<FuncType>,
}

impl fmt::Display for MissingImport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{} ({})", self.module, self.name, self.kind)?;
        if let Some(h) = &self.host_has {
            write!(f, " [host provides {h}]")?;
        }
        Ok(())
    }
}

/// Imports and exports of a module, read before instantiation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Imports in declaration order.
    pub imports: Vec<Import>,
    /// Exports in declaration order.
    pub exports: Vec<Export>,
    /// Initial pages of the module's own (first defined) memory.
    pub memory_min_pages: Option<u64>,
    /// Declared maximum pages of that memory.
    pub memory_max_pages: Option<u64>,
    /// The largest minimum size of a table the module defines, in elements.
    pub table_min: Option<u64>,
    /// The function the start section names, if the module has one (the
    /// engines run it right after instantiation, see [`crate::START_EXPORT`]).
    pub start: Option<u32>,
    /// Lower-case hex sha256 of the binary.
    pub sha256: String,
}

fn conv_val(t: &wasmparser::ValType) -> Option<ValType> {
    match t {
        wasmparser::ValType::I32 => Some(ValType::I32),
        wasmparser::ValType::I64 => Some(ValType::I64),
        wasmparser::ValType::F32 => Some(ValType::F32),
        wasmparser::ValType::F64 => Some(ValType::F64),
        _ => None,
    }
}

fn conv_func(t: &wasmparser::FuncType) -> ImportKind {
    let params: Option<Vec<_>> = t.params().iter().map(conv_val).collect();
    let results: Option<Vec<_>> = t.results().iter().map(conv_val).collect();
    match (params, results) {
        (Some(p), Some(r)) => ImportKind::Func(FuncType::new(p, r)),
        _ => ImportKind::UnsupportedFunc(format!("{t}")),
    }
}

impl ModuleInfo {
    /// Validates a binary module and reads its imports and exports.
    pub fn parse(wasm: &[u8]) -> Result<ModuleInfo, EngineError> {
        use sha2::Digest;
        let wasm = crate::to_binary(wasm)?;
        let mut validator = wasmparser::Validator::new();
        let types = validator
            .validate_all(&wasm)
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let types = types.as_ref();
        let kind_of = |e: wasmparser::types::EntityType| match e {
            wasmparser::types::EntityType::Func(id)
            | wasmparser::types::EntityType::FuncExact(id) => conv_func(types[id].unwrap_func()),
            wasmparser::types::EntityType::Memory(_) => ImportKind::Memory,
            wasmparser::types::EntityType::Table(_) => ImportKind::Table,
            wasmparser::types::EntityType::Global(_) => ImportKind::Global,
            wasmparser::types::EntityType::Tag(_) => ImportKind::Tag,
        };
        let mut info = ModuleInfo::default();
        for (m, n, e) in types.core_imports().into_iter().flatten() {
            info.imports.push(Import {
                module: m.to_string(),
                name: n.to_string(),
                kind: kind_of(e),
            });
        }
        for (n, e) in types.core_exports().into_iter().flatten() {
            info.exports.push(Export {
                name: n.to_string(),
                kind: kind_of(e),
            });
        }
        for payload in wasmparser::Parser::new(0).parse_all(&wasm) {
            match payload {
                Ok(wasmparser::Payload::MemorySection(r)) => {
                    if let Some(Ok(m)) = r.into_iter().next() {
                        info.memory_min_pages = Some(m.initial);
                        info.memory_max_pages = m.maximum;
                    }
                }
                Ok(wasmparser::Payload::TableSection(r)) => {
                    for t in r.into_iter().flatten() {
                        info.table_min = info.table_min.max(Some(t.ty.initial));
                    }
                }
                Ok(wasmparser::Payload::StartSection { func, .. }) => info.start = Some(func),
                _ => {}
            }
        }
        info.sha256 = sha2::Sha256::digest(&wasm)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(info)
    }

    /// The export named `name`, if any.
    pub fn export(&self, name: &str) -> Option<&Export> {
        self.exports.iter().find(|e| e.name == name)
    }

    /// True if the module exports anything named `name`.
    pub fn has_export(&self, name: &str) -> bool {
        self.export(name).is_some()
    }

    /// Signature of the exported function `name`.
    pub fn export_func(&self, name: &str) -> Option<&FuncType> {
        match self.export(name).map(|e| &e.kind) {
            Some(ImportKind::Func(t)) => Some(t),
            _ => None,
        }
    }

    /// True if the module imports anything from module `module`.
    pub fn imports_module(&self, module: &str) -> bool {
        self.imports.iter().any(|i| i.module == module)
    }

    /// Every import the host table does not satisfy (absent, wrong
    /// signature, or not a function), naming module and function.
    pub fn missing_imports(&self, host: &HostFunctions) -> Vec<MissingImport> {
        let mut out = Vec::new();
        for i in &self.imports {
            let h = host.get(&i.module, &i.name);
            let ok = matches!((&i.kind, h), (ImportKind::Func(t), Some(h)) if *t == h.ty);
            if !ok {
                out.push(MissingImport {
                    module: i.module.clone(),
                    name: i.name.clone(),
                    kind: i.kind.clone(),
                    host_has: h.map(|h| h.ty.clone()),
                });
            }
        }
        out
    }
}
