;; The proxy-wasm conformance guest for root-context features (http_call, ticks, shared
;; data, queues, metrics, status, effective context, done), one template for ABI 0.1.0,
;; 0.2.0 and 0.2.1 (see guests/proxy_wasm.wat for the template rules).
(module
  (memory (export "memory") 2)
  (func (export "proxy_abi_version_{{abi_version}}"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0))
)
