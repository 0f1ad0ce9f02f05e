//! The module's start section, run after the instance exists.
//!
//! A core start function may call host functions, and http-wasm and
//! proxy-wasm guests do (`enable_features`, `get_config`, `proxy_log`): the
//! reference hosts let those reach the module's exported memory. An engine
//! runs the start function inside instantiation, before the host has the
//! instance, and wasmer gives a host function no way to look up the calling
//! instance's exports (wasmtime's `Caller::get_export` could). So, the same
//! on both engines, the module is rewritten before compilation: the start
//! section is removed and its function exported as [`START_EXPORT`], which
//! the backends call right after instantiation, with the memory in place and
//! under the call deadline, before anything else (`_start`, `_initialize`).
//!
//! The rewrite copies every other section byte for byte, so function indices
//! and code do not change. It is deterministic in the input bytes, so the
//! compile cache keys on the original module's hash plus a marker of this
//! rewrite in the engine fingerprints ([`REWRITE_TAG`]).

use crate::EngineError;

/// Export name the start section's function gets; a module must not use it.
pub const START_EXPORT: &str = "__wasmgate_start_section";

/// Part of both engines' cache fingerprints: artifacts compiled before the
/// rewrite existed still contain a start section and must not be reused.
pub(crate) const REWRITE_TAG: &str = "start=export1";

const EXPORT_SECTION: u8 = 7;
const START_SECTION: u8 = 8;

fn leb_u32(mut v: u32, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn section(id: u8, content: &[u8], out: &mut Vec<u8>) -> Result<(), EngineError> {
    let len = u32::try_from(content.len())
        .map_err(|_| EngineError::Invalid("section larger than 4 GiB".into()))?;
    out.push(id);
    leb_u32(len, out);
    out.extend_from_slice(content);
    Ok(())
}

/// One export entry: name, kind `func` (0), function index.
fn func_export(name: &str, index: u32, out: &mut Vec<u8>) {
    leb_u32(name.len() as u32, out);
    out.extend_from_slice(name.as_bytes());
    out.push(0x00);
    leb_u32(index, out);
}

/// The module with its start section turned into the export [`START_EXPORT`],
/// or `None` when it has no start section. `wasm` must be a valid binary module.
pub(crate) fn hoist(wasm: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
    use wasmparser::Payload;
    let invalid = |e: wasmparser::BinaryReaderError| EngineError::Invalid(e.to_string());
    let mut start = None;
    for p in wasmparser::Parser::new(0).parse_all(wasm) {
        match p.map_err(invalid)? {
            Payload::StartSection { func, .. } => start = Some(func),
            Payload::ExportSection(r) => {
                for e in r {
                    if e.map_err(invalid)?.name == START_EXPORT {
                        return Err(EngineError::Invalid(format!(
                            "the module exports `{START_EXPORT}`, a name wasmgate reserves"
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    let Some(start) = start else { return Ok(None) };
    let mut out = Vec::with_capacity(wasm.len() + 64);
    let mut exported = false;
    for p in wasmparser::Parser::new(0).parse_all(wasm) {
        let p = p.map_err(invalid)?;
        if let Payload::Version { range, .. } = &p {
            out.extend_from_slice(&wasm[range.start as usize..range.end as usize]);
            continue;
        }
        let Some((id, range)) = p.as_section() else {
            continue;
        };
        let content = &wasm[range.start as usize..range.end as usize];
        match id {
            EXPORT_SECTION => {
                let Payload::ExportSection(r) = &p else {
                    unreachable!("section id 7 is the export section")
                };
                // Same entries, one more at the end: count, old entries, new entry.
                let mut c = Vec::with_capacity(content.len() + START_EXPORT.len() + 8);
                leb_u32(r.count() + 1, &mut c);
                c.extend_from_slice(&content[leb_len(content)..]);
                func_export(START_EXPORT, start, &mut c);
                section(EXPORT_SECTION, &c, &mut out)?;
                exported = true;
            }
            START_SECTION => {
                // The export section, when there is one, came just before;
                // otherwise the start section's place is where it belongs.
                if !exported {
                    let mut c = Vec::new();
                    leb_u32(1, &mut c);
                    func_export(START_EXPORT, start, &mut c);
                    section(EXPORT_SECTION, &c, &mut out)?;
                    exported = true;
                }
            }
            _ => section(id, content, &mut out)?,
        }
    }
    Ok(Some(out))
}

/// Length of the LEB128 number at the start of `b`.
fn leb_len(b: &[u8]) -> usize {
    b.iter()
        .position(|x| x & 0x80 == 0)
        .map_or(b.len(), |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exports(wasm: &[u8]) -> Vec<(String, u32)> {
        let mut v = Vec::new();
        for p in wasmparser::Parser::new(0).parse_all(wasm) {
            if let wasmparser::Payload::ExportSection(r) = p.unwrap() {
                for e in r {
                    let e = e.unwrap();
                    v.push((e.name.to_string(), e.index));
                }
            }
        }
        v
    }

    fn has_start(wasm: &[u8]) -> bool {
        wasmparser::Parser::new(0)
            .parse_all(wasm)
            .any(|p| matches!(p, Ok(wasmparser::Payload::StartSection { .. })))
    }

    #[test]
    fn start_becomes_an_export() {
        let with_exports = wat::parse_str(
            r#"(module (func $a) (func $s (call $a)) (memory (export "memory") 1)
               (export "a" (func $a)) (start $s) (data (i32.const 0) "x"))"#,
        )
        .unwrap();
        let out = hoist(&with_exports).unwrap().unwrap();
        wasmparser::Validator::new().validate_all(&out).unwrap();
        assert!(!has_start(&out));
        assert_eq!(
            exports(&out),
            [
                ("memory".to_string(), 0),
                ("a".to_string(), 0),
                (START_EXPORT.to_string(), 1)
            ]
        );

        let no_exports =
            wat::parse_str(r#"(module (import "m" "f" (func $f)) (start $f) (func (call $f)))"#)
                .unwrap();
        let out = hoist(&no_exports).unwrap().unwrap();
        wasmparser::Validator::new().validate_all(&out).unwrap();
        assert!(!has_start(&out));
        assert_eq!(exports(&out), [(START_EXPORT.to_string(), 0)]);
    }

    #[test]
    fn no_start_no_rewrite_and_reserved_name() {
        let plain = wat::parse_str(r#"(module (func (export "f")))"#).unwrap();
        assert!(hoist(&plain).unwrap().is_none());
        let taken = wat::parse_str(format!(
            r#"(module (func $s) (export "{START_EXPORT}" (func $s)) (start $s))"#
        ))
        .unwrap();
        let e = hoist(&taken).unwrap_err().to_string();
        assert!(e.contains("reserves"), "{e}");
    }
}
