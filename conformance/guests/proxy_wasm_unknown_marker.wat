;; A proxy-wasm filter with an ABI version marker of a version that does not exist (`proxy_abi_version_9_9_9`): every callback of
;; 0.2.1, under a version no host speaks. Hosts refuse it (proxy-wasm-cpp-host's
;; `getAbiVersion` answers `Unknown`); it must not load.
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_9_9_9"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0)))
