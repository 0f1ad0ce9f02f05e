;; A proxy-wasm filter without an ABI version marker (`proxy_abi_version_*`): every callback of
;; 0.2.1, but nothing says which ABI it speaks. Hosts refuse it (proxy-wasm-cpp-host's
;; `getAbiVersion` finds no version: "ABI version not found"); it must not load.
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0)))
